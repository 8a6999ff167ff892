-- The subset of mailcow's schema that mailcow-ldap-auth reads and writes
-- (mailcow: data/web/inc/init_db.inc.php). Column names, types and defaults
-- follow mailcow; tables the tool never touches are left out.

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
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

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
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE `templates` (
  `id` INT NOT NULL AUTO_INCREMENT,
  `template` VARCHAR(255) NOT NULL,
  `type` VARCHAR(255) NOT NULL,
  `attributes` JSON,
  `created` DATETIME(0) NOT NULL DEFAULT NOW(0),
  `modified` DATETIME ON UPDATE CURRENT_TIMESTAMP,
  PRIMARY KEY (`id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE `alias` (
  `id` INT NOT NULL AUTO_INCREMENT,
  `address` VARCHAR(255) NOT NULL,
  `goto` TEXT NOT NULL,
  `domain` VARCHAR(255) NOT NULL,
  `comment` TEXT,
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
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE `quota2` (
  `username` VARCHAR(255) NOT NULL,
  `bytes` BIGINT(20) NOT NULL DEFAULT '0',
  `messages` INT(11) NOT NULL DEFAULT '0',
  PRIMARY KEY (`username`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE `quota2replica` (
  `username` VARCHAR(255) NOT NULL,
  `bytes` BIGINT(20) NOT NULL DEFAULT '0',
  `messages` INT(11) NOT NULL DEFAULT '0',
  PRIMARY KEY (`username`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

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
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE `tags_mailbox` (
  `tag_name` VARCHAR(255) NOT NULL,
  `username` VARCHAR(255) NOT NULL,
  UNIQUE KEY `tag_username` (`tag_name`, `username`),
  FOREIGN KEY `fk_tags_mailbox` (`username`) REFERENCES `mailbox` (`username`) ON DELETE CASCADE ON UPDATE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

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
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE `identity_provider` (
  `key` VARCHAR(255) NOT NULL,
  `value` TEXT NOT NULL,
  `created` DATETIME(0) NOT NULL DEFAULT NOW(0),
  `modified` DATETIME ON UPDATE CURRENT_TIMESTAMP,
  PRIMARY KEY (`key`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

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
