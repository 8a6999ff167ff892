-- The subset of mailcow's schema that mailcow-ldap-auth reads and writes
-- (mailcow: data/web/inc/init_db.inc.php). Column names, types and defaults
-- follow mailcow; tables the tool never touches are left out. Every table
-- has mailcow's attributes (`ENGINE=InnoDB DEFAULT CHARSET=utf8mb4
-- ROW_FORMAT=DYNAMIC`: the charset's default collation, utf8mb4_general_ci,
-- as mailcow's my.cnf sets for the server).
-- Checked column by column against mailcow-dockerized 2026-07a (commit
-- 06424670, db_version 19022026_1220), with _sogo_static_view, sender_acl,
-- alias_domain and the three views SOGo's rows are made from.

CREATE TABLE `domain` (
  `domain` VARCHAR(255) NOT NULL,
  `description` VARCHAR(255),
  `aliases` INT(10) NOT NULL DEFAULT '0',
  `mailboxes` INT(10) NOT NULL DEFAULT '0',
  `defquota` BIGINT(20) NOT NULL DEFAULT '3072',
  `maxquota` BIGINT(20) NOT NULL DEFAULT '102400',
  `quota` BIGINT(20) NOT NULL DEFAULT '102400',
  `relayhost` VARCHAR(255) NOT NULL DEFAULT '0',
  `backupmx` TINYINT(1) NOT NULL DEFAULT '0',
  `gal` TINYINT(1) NOT NULL DEFAULT '1',
  `relay_all_recipients` TINYINT(1) NOT NULL DEFAULT '0',
  `relay_unknown_only` TINYINT(1) NOT NULL DEFAULT '0',
  `created` DATETIME(0) NOT NULL DEFAULT NOW(0),
  `modified` DATETIME ON UPDATE CURRENT_TIMESTAMP,
  `active` TINYINT(1) NOT NULL DEFAULT '1',
  PRIMARY KEY (`domain`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 ROW_FORMAT=DYNAMIC;

CREATE TABLE `mailbox` (
  `username` VARCHAR(255) NOT NULL,
  `password` VARCHAR(255) NOT NULL,
  `name` VARCHAR(255),
  `description` VARCHAR(255),
  `mailbox_path_prefix` VARCHAR(150) DEFAULT '/var/vmail/',
  `quota` BIGINT(20) NOT NULL DEFAULT '102400',
  `local_part` VARCHAR(255) NOT NULL,
  `domain` VARCHAR(255) NOT NULL,
  `attributes` JSON,
  `custom_attributes` JSON NOT NULL DEFAULT ('{}'),
  `kind` VARCHAR(100) NOT NULL DEFAULT '',
  `multiple_bookings` INT NOT NULL DEFAULT -1,
  `authsource` ENUM('mailcow', 'keycloak', 'generic-oidc', 'ldap') DEFAULT 'mailcow',
  `created` DATETIME(0) NOT NULL DEFAULT NOW(0),
  `modified` DATETIME ON UPDATE CURRENT_TIMESTAMP,
  `active` TINYINT(1) NOT NULL DEFAULT '1',
  PRIMARY KEY (`username`),
  KEY `domain` (`domain`),
  KEY `kind` (`kind`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 ROW_FORMAT=DYNAMIC;

CREATE TABLE `templates` (
  `id` INT NOT NULL AUTO_INCREMENT,
  `template` VARCHAR(255) NOT NULL,
  `type` VARCHAR(255) NOT NULL,
  `attributes` JSON,
  `created` DATETIME(0) NOT NULL DEFAULT NOW(0),
  `modified` DATETIME ON UPDATE CURRENT_TIMESTAMP,
  PRIMARY KEY (`id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 ROW_FORMAT=DYNAMIC;

CREATE TABLE `alias` (
  `id` INT NOT NULL AUTO_INCREMENT,
  `address` VARCHAR(255) NOT NULL,
  `goto` TEXT NOT NULL,
  `domain` VARCHAR(255) NOT NULL,
  `private_comment` TEXT,
  `public_comment` TEXT,
  `created` DATETIME(0) NOT NULL DEFAULT NOW(0),
  `modified` DATETIME ON UPDATE CURRENT_TIMESTAMP,
  `sogo_visible` TINYINT(1) NOT NULL DEFAULT '1',
  `internal` TINYINT(1) NOT NULL DEFAULT '0',
  `sender_allowed` TINYINT(1) NOT NULL DEFAULT '1',
  `active` TINYINT(1) NOT NULL DEFAULT '1',
  PRIMARY KEY (`id`),
  UNIQUE KEY `address` (`address`),
  KEY `domain` (`domain`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 ROW_FORMAT=DYNAMIC;

CREATE TABLE `quota2` (
  `username` VARCHAR(255) NOT NULL,
  `bytes` BIGINT(20) NOT NULL DEFAULT '0',
  `messages` BIGINT(20) NOT NULL DEFAULT '0',
  PRIMARY KEY (`username`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 ROW_FORMAT=DYNAMIC;

CREATE TABLE `quota2replica` (
  `username` VARCHAR(255) NOT NULL,
  `bytes` BIGINT(20) NOT NULL DEFAULT '0',
  `messages` BIGINT(20) NOT NULL DEFAULT '0',
  PRIMARY KEY (`username`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 ROW_FORMAT=DYNAMIC;

CREATE TABLE `user_acl` (
  `username` VARCHAR(255) NOT NULL,
  `spam_alias` TINYINT(1) NOT NULL DEFAULT '1',
  `tls_policy` TINYINT(1) NOT NULL DEFAULT '1',
  `spam_score` TINYINT(1) NOT NULL DEFAULT '1',
  `spam_policy` TINYINT(1) NOT NULL DEFAULT '1',
  `delimiter_action` TINYINT(1) NOT NULL DEFAULT '1',
  `syncjobs` TINYINT(1) NOT NULL DEFAULT '0',
  `eas_reset` TINYINT(1) NOT NULL DEFAULT '1',
  `sogo_profile_reset` TINYINT(1) NOT NULL DEFAULT '0',
  `pushover` TINYINT(1) NOT NULL DEFAULT '1',
  `quarantine` TINYINT(1) NOT NULL DEFAULT '1',
  `quarantine_attachments` TINYINT(1) NOT NULL DEFAULT '1',
  `quarantine_notification` TINYINT(1) NOT NULL DEFAULT '1',
  `quarantine_category` TINYINT(1) NOT NULL DEFAULT '1',
  `app_passwds` TINYINT(1) NOT NULL DEFAULT '1',
  `pw_reset` TINYINT(1) NOT NULL DEFAULT '1',
  PRIMARY KEY (`username`),
  FOREIGN KEY `fk_username` (`username`) REFERENCES `mailbox` (`username`) ON DELETE CASCADE ON UPDATE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 ROW_FORMAT=DYNAMIC;

CREATE TABLE `tags_mailbox` (
  `tag_name` VARCHAR(255) NOT NULL,
  `username` VARCHAR(255) NOT NULL,
  UNIQUE KEY `tag_username` (`tag_name`, `username`),
  FOREIGN KEY `fk_tags_mailbox` (`username`) REFERENCES `mailbox` (`username`) ON DELETE CASCADE ON UPDATE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 ROW_FORMAT=DYNAMIC;

CREATE TABLE `app_passwd` (
  `id` INT NOT NULL AUTO_INCREMENT,
  `name` VARCHAR(255) NOT NULL,
  `mailbox` VARCHAR(255) NOT NULL,
  `domain` VARCHAR(255) NOT NULL,
  `password` VARCHAR(255) NOT NULL,
  `created` DATETIME(0) NOT NULL DEFAULT NOW(0),
  `modified` DATETIME ON UPDATE CURRENT_TIMESTAMP,
  `imap_access` TINYINT(1) NOT NULL DEFAULT '1',
  `smtp_access` TINYINT(1) NOT NULL DEFAULT '1',
  `dav_access` TINYINT(1) NOT NULL DEFAULT '1',
  `eas_access` TINYINT(1) NOT NULL DEFAULT '1',
  `pop3_access` TINYINT(1) NOT NULL DEFAULT '1',
  `sieve_access` TINYINT(1) NOT NULL DEFAULT '1',
  `active` TINYINT(1) NOT NULL DEFAULT '1',
  PRIMARY KEY (`id`),
  FOREIGN KEY `fk_username_app_passwd` (`mailbox`) REFERENCES `mailbox` (`username`) ON DELETE CASCADE ON UPDATE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 ROW_FORMAT=DYNAMIC;

CREATE TABLE `identity_provider` (
  `key` VARCHAR(255) NOT NULL,
  `value` TEXT NOT NULL,
  `created` DATETIME(0) NOT NULL DEFAULT NOW(0),
  `modified` DATETIME ON UPDATE CURRENT_TIMESTAMP,
  PRIMARY KEY (`key`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 ROW_FORMAT=DYNAMIC;

-- mailcow: init_db.inc.php "sasl_log" (written by set_sasl_log() on each login).
CREATE TABLE `sasl_log` (
  `service` VARCHAR(32) NOT NULL DEFAULT '',
  `app_password` INT,
  `username` VARCHAR(255) NOT NULL,
  `real_rip` VARCHAR(64) NOT NULL,
  `datetime` DATETIME(0) NOT NULL DEFAULT NOW(0),
  PRIMARY KEY (`service`, `real_rip`, `username`),
  KEY `username` (`username`),
  KEY `service` (`service`),
  KEY `datetime` (`datetime`),
  KEY `real_rip` (`real_rip`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 ROW_FORMAT=DYNAMIC;


-- SOGo's user source: a table, not a view, refreshed by mailcow's
-- update_sogo_static_view() (functions.inc.php).
CREATE TABLE `_sogo_static_view` (
  `c_uid` VARCHAR(255) NOT NULL,
  `domain` VARCHAR(255) NOT NULL,
  `c_name` VARCHAR(255) NOT NULL,
  `c_password` VARCHAR(255) NOT NULL DEFAULT '',
  `c_cn` VARCHAR(255),
  `c_l` VARCHAR(255),
  `c_o` VARCHAR(255),
  `c_ou` VARCHAR(255),
  `c_telephonenumber` VARCHAR(255),
  `mail` VARCHAR(255) NOT NULL,
  `aliases` TEXT NOT NULL,
  `ad_aliases` VARCHAR(6144) NOT NULL DEFAULT '',
  `ext_acl` VARCHAR(6144) NOT NULL DEFAULT '',
  `kind` VARCHAR(100) NOT NULL DEFAULT '',
  `multiple_bookings` INT NOT NULL DEFAULT -1,
  PRIMARY KEY (`c_uid`),
  KEY `domain` (`domain`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 ROW_FORMAT=DYNAMIC;

CREATE TABLE `sender_acl` (
  `id` INT NOT NULL AUTO_INCREMENT,
  `logged_in_as` VARCHAR(255) NOT NULL,
  `send_as` VARCHAR(255) NOT NULL,
  `external` TINYINT(1) NOT NULL DEFAULT '0',
  PRIMARY KEY (`id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 ROW_FORMAT=DYNAMIC;

CREATE TABLE `alias_domain` (
  `alias_domain` VARCHAR(255) NOT NULL,
  `target_domain` VARCHAR(255) NOT NULL,
  `created` DATETIME(0) NOT NULL DEFAULT NOW(0),
  `modified` DATETIME ON UPDATE CURRENT_TIMESTAMP,
  `active` TINYINT(1) NOT NULL DEFAULT '1',
  PRIMARY KEY (`alias_domain`),
  KEY `active` (`active`),
  KEY `target_domain` (`target_domain`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 ROW_FORMAT=DYNAMIC;

CREATE VIEW grouped_mail_aliases (username, aliases) AS
  SELECT goto, IFNULL(GROUP_CONCAT(address ORDER BY address SEPARATOR ' '), '') AS address FROM alias
  WHERE address != goto AND active = '1' AND sogo_visible = '1' AND address NOT LIKE '@%'
  GROUP BY goto;

CREATE VIEW grouped_sender_acl_external (username, send_as_acl) AS
  SELECT logged_in_as, IFNULL(GROUP_CONCAT(send_as SEPARATOR ' '), '') AS send_as_acl FROM sender_acl
  WHERE send_as NOT LIKE '@%' AND external = '1'
  GROUP BY logged_in_as;

CREATE VIEW grouped_domain_alias_address (username, ad_alias) AS
  SELECT username, IFNULL(GROUP_CONCAT(local_part, '@', alias_domain SEPARATOR ' '), '') AS ad_alias FROM mailbox
  LEFT OUTER JOIN alias_domain ON target_domain = domain
  GROUP BY username;
