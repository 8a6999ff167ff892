-- mailcow-ldap-auth: Dovecot Lua passdb and userdb that ask `mailcow-ldap-auth serve`
-- over HTTP/JSON (POST /auth, POST /lookup). See README.md beside this file.
--
-- Answers of serve and what Dovecot gets:
--   /auth    200 {"success":true,"user",...,"fields"} -> PASSDB_RESULT_OK (+ user, userdb_* fields)
--            401 {"success":false}                    -> PASSDB_RESULT_PASSWORD_MISMATCH
--            401 {"success":false,"nologin":true,"reason":TEXT}
--                                                     -> PASSDB_RESULT_OK with fields nologin=y,
--                reason=TEXT: the password was right, the login is refused, and the client
--                is told TEXT (IMAP "NO [CONTACTADMIN] TEXT") instead of a password prompt
--            401 {"success":false,"not_ours":true}    -> with not_ours = next: PASSDB_RESULT_NEXT
--                (Dovecot asks the next passdb whatever result_failure says); else
--                PASSDB_RESULT_PASSWORD_MISMATCH
--            403 (X-Auth-Secret missing or wrong)     -> PASSDB_RESULT_INTERNAL_FAILURE
--            404                                      -> PASSDB_RESULT_USER_UNKNOWN
--            503, anything else, no answer            -> PASSDB_RESULT_INTERNAL_FAILURE
--   /lookup  200 -> USERDB_RESULT_OK (fields), 404 -> USERDB_RESULT_USER_UNKNOWN,
--            anything else -> USERDB_RESULT_INTERNAL_FAILURE
-- An internal failure is a *temporary* failure for the client (IMAP "NO [UNAVAILABLE]",
-- LMTP 4xx): a directory outage never reads as a wrong password.
--
-- Settings (first found wins):
--   Dovecot 2.4: `lua_settings { url = ...; secret_file = ...; timeout_msecs = ... }`
--                in the passdb/userdb block (handed to script_init()).
--   Dovecot 2.3: environment variables of the auth processes, set with
--                `import_environment` in dovecot.conf:
--                MAILCOW_LDAP_AUTH_URL, MAILCOW_LDAP_AUTH_SECRET_FILE,
--                MAILCOW_LDAP_AUTH_TIMEOUT_MSECS, MAILCOW_LDAP_AUTH_NOT_OURS.
--   Defaults:    url = http://127.0.0.1:9083, no secret, timeout 10000 ms,
--                not_ours = fail.
-- `not_ours`: what a login serve says is not its to decide (a keycloak or
-- generic-oidc mailbox, mailcow's Identity Provider not LDAP, SOGo's single
-- sign-on, any refusal with passdb = "ldap-only") becomes: "next" in a chain
-- where another passdb follows (mailcow's own), "fail" where serve is the only
-- passdb (a "next" from the last passdb is an internal failure to Dovecot).
-- `url` is the base URL of serve (without /auth). `secret_file` holds the shared secret
-- of serve's `[serve] http_secret_file`; it is sent in the header X-Auth-Secret.
--
-- Uses only what Dovecot itself provides (dovecot.http, Dovecot >= 2.3.19 / 2.4): no
-- LuaSocket, no cjson. Works with Lua 5.1 to 5.4.

local DEFAULTS = {
  url = "http://127.0.0.1:9083",
  secret_file = "",
  timeout_msecs = 10000,
  not_ours = "fail",
}

local ENV = {
  url = "MAILCOW_LDAP_AUTH_URL",
  secret_file = "MAILCOW_LDAP_AUTH_SECRET_FILE",
  timeout_msecs = "MAILCOW_LDAP_AUTH_TIMEOUT_MSECS",
  not_ours = "MAILCOW_LDAP_AUTH_NOT_OURS",
}

local settings = nil  -- resolved on first use (or in script_init)
local lua_settings = {}
local client = nil
local secret = nil    -- false: none configured

------------------------------------------------------------------------------
-- JSON: just what this exchange needs.

local function json_string(s)
  s = tostring(s)
  s = s:gsub('[%c"\\]', function(c)
    if c == '"' then return '\\"' end
    if c == '\\' then return '\\\\' end
    if c == '\n' then return '\\n' end
    if c == '\r' then return '\\r' end
    if c == '\t' then return '\\t' end
    return string.format("\\u%04x", c:byte())
  end)
  return '"' .. s .. '"'
end

local function json_object(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys)
  local parts = {}
  for _, k in ipairs(keys) do
    parts[#parts + 1] = json_string(k) .. ":" .. json_string(t[k])
  end
  return "{" .. table.concat(parts, ",") .. "}"
end

local function utf8_char(cp)
  if cp < 0x80 then return string.char(cp) end
  if cp < 0x800 then
    return string.char(0xC0 + math.floor(cp / 0x40), 0x80 + cp % 0x40)
  end
  if cp < 0x10000 then
    return string.char(0xE0 + math.floor(cp / 0x1000),
      0x80 + math.floor(cp / 0x40) % 0x40, 0x80 + cp % 0x40)
  end
  return string.char(0xF0 + math.floor(cp / 0x40000), 0x80 + math.floor(cp / 0x1000) % 0x40,
    0x80 + math.floor(cp / 0x40) % 0x40, 0x80 + cp % 0x40)
end

-- Decode a JSON text; raises an error on malformed input (call it with pcall).
local function json_decode(text)
  local pos = 1
  local function fail(what)
    error(string.format("malformed JSON at byte %d: %s", pos, what), 0)
  end
  local function ws()
    pos = text:find("[^ \t\r\n]", pos) or (#text + 1)
  end
  local value
  local function str()
    pos = pos + 1 -- opening quote
    local out = {}
    while true do
      local c = text:sub(pos, pos)
      if c == "" then fail("unterminated string") end
      if c == '"' then pos = pos + 1; break end
      if c == "\\" then
        local e = text:sub(pos + 1, pos + 1)
        local simple = ({ ['"'] = '"', ['\\'] = '\\', ['/'] = '/', b = '\b', f = '\f',
                          n = '\n', r = '\r', t = '\t' })[e]
        if simple then
          out[#out + 1] = simple
          pos = pos + 2
        elseif e == "u" then
          local hex = text:sub(pos + 2, pos + 5)
          if not hex:match("^%x%x%x%x$") then fail("bad \\u escape") end
          local cp = tonumber(hex, 16)
          pos = pos + 6
          if cp >= 0xD800 and cp <= 0xDBFF and text:sub(pos, pos + 1) == "\\u" then
            local lo = tonumber(text:sub(pos + 2, pos + 5), 16)
            if lo and lo >= 0xDC00 and lo <= 0xDFFF then
              cp = 0x10000 + (cp - 0xD800) * 0x400 + (lo - 0xDC00)
              pos = pos + 6
            end
          end
          out[#out + 1] = utf8_char(cp)
        else
          fail("bad escape")
        end
      else
        local stop = text:find('["\\]', pos) or (#text + 1)
        out[#out + 1] = text:sub(pos, stop - 1)
        pos = stop
      end
    end
    return table.concat(out)
  end
  function value()
    ws()
    local c = text:sub(pos, pos)
    if c == "{" then
      local obj = {}
      pos = pos + 1
      ws()
      if text:sub(pos, pos) == "}" then pos = pos + 1; return obj end
      while true do
        ws()
        if text:sub(pos, pos) ~= '"' then fail("object key expected") end
        local k = str()
        ws()
        if text:sub(pos, pos) ~= ":" then fail("':' expected") end
        pos = pos + 1
        obj[k] = value()
        ws()
        local d = text:sub(pos, pos)
        pos = pos + 1
        if d == "}" then return obj end
        if d ~= "," then fail("',' or '}' expected") end
      end
    elseif c == "[" then
      local arr = {}
      pos = pos + 1
      ws()
      if text:sub(pos, pos) == "]" then pos = pos + 1; return arr end
      while true do
        arr[#arr + 1] = value()
        ws()
        local d = text:sub(pos, pos)
        pos = pos + 1
        if d == "]" then return arr end
        if d ~= "," then fail("',' or ']' expected") end
      end
    elseif c == '"' then
      return str()
    elseif text:sub(pos, pos + 3) == "true" then
      pos = pos + 4; return true
    elseif text:sub(pos, pos + 4) == "false" then
      pos = pos + 5; return false
    elseif text:sub(pos, pos + 3) == "null" then
      pos = pos + 4; return nil
    else
      local num = text:match("^-?%d+%.?%d*[eE]?[-+]?%d*", pos)
      if not num or num == "" then fail("value expected") end
      pos = pos + #num
      return tonumber(num)
    end
  end
  local v = value()
  ws()
  if pos <= #text then fail("trailing data") end
  return v
end

------------------------------------------------------------------------------
-- Settings and the HTTP client.

local function resolve_settings()
  if settings then return settings end
  local s = {}
  for k, default in pairs(DEFAULTS) do
    local v = lua_settings[k]
    if v == nil or v == "" then v = os.getenv(ENV[k]) end
    if v == nil or v == "" then v = default end
    s[k] = v
  end
  s.url = tostring(s.url):gsub("/+$", "")
  s.timeout_msecs = tonumber(s.timeout_msecs) or DEFAULTS.timeout_msecs
  s.not_ours = tostring(s.not_ours):lower()
  if s.not_ours ~= "next" and s.not_ours ~= "fail" then
    error("not_ours = " .. s.not_ours .. ": must be next or fail", 0)
  end
  settings = s
  return s
end

-- Dovecot 2.4 has dovecot.base64 / dovecot.var_expand, 2.3 has neither; their HTTP
-- clients take differently named settings (2.3: *_msecs numbers, 2.4: Dovecot settings).
local function is_dovecot_24()
  return dovecot.base64 ~= nil or dovecot.var_expand ~= nil
end

local function get_client()
  if client then return client end
  if dovecot.http == nil or dovecot.http.client == nil then
    error("this Dovecot has no dovecot.http (Lua HTTP client): Dovecot 2.3.19 or later is needed", 0)
  end
  local s = resolve_settings()
  local t = s.timeout_msecs
  if is_dovecot_24() then
    client = dovecot.http.client({
      request_timeout = tostring(t) .. " msecs",
      connect_timeout = tostring(t) .. " msecs",
      request_max_attempts = 1,
      max_connect_attempts = 1,
      user_agent = "dovecot-mailcow-ldap-auth",
    })
  else
    client = dovecot.http.client({
      request_timeout_msecs = t,
      request_absolute_timeout_msecs = t,
      connect_timeout_msecs = t,
      max_attempts = 1,
      max_connect_attempts = 1,
      user_agent = "dovecot-mailcow-ldap-auth",
    })
  end
  return client
end

-- The shared secret (read once per process); false when none is configured.
local function get_secret()
  if secret ~= nil then return secret end
  local path = resolve_settings().secret_file
  if path == "" then
    secret = false
    return secret
  end
  local f, err = io.open(path, "r")
  if not f then error("cannot read secret_file: " .. tostring(err), 0) end
  local text = f:read("*a") or ""
  f:close()
  -- The first line, as serve reads its http_secret_file.
  text = text:match("^[^\n]*"):gsub("\r$", "")
  if text == "" then error("secret_file " .. path .. " is empty", 0) end
  secret = text
  return secret
end

-- POST `body` (a table) to serve's `path`: returns status, decoded JSON (or nil), text.
-- Status 0 with an error text when the request could not be made at all.
local function post(path, body)
  local ok, status, payload = pcall(function()
    local req = get_client():request({ url = resolve_settings().url .. path, method = "POST" })
    req:add_header("Content-Type", "application/json")
    local sec = get_secret()
    if sec then req:add_header("X-Auth-Secret", sec) end
    req:set_payload(json_object(body))
    local resp = req:submit()
    -- Dovecot's own 9xxx codes mean no HTTP answer (connection refused, timeout, ...).
    local st = resp:status()
    local text = resp:payload() or ""
    if st >= 9000 then text = resp:reason() or "" end
    return st, text
  end)
  if not ok then return 0, nil, tostring(status) end
  local decoded = nil
  local dok, v = pcall(json_decode, payload)
  if dok and type(v) == "table" then decoded = v end
  return status, decoded, payload
end

local function field_table(json, prefix)
  local out = {}
  if type(json.fields) == "table" then
    for k, v in pairs(json.fields) do
      if type(v) == "string" or type(v) == "number" then
        out[prefix .. k] = tostring(v)
      end
    end
  end
  return out
end

local function describe(status, json, text)
  if json and json.error then return string.format("HTTP %d: %s", status, tostring(json.error)) end
  if status == 0 then return "request failed: " .. text end
  if status >= 9000 then return string.format("no answer from %s (%d): %s", resolve_settings().url, status, text) end
  return string.format("HTTP %d", status)
end

------------------------------------------------------------------------------
-- Dovecot's entry points.

-- Dovecot 2.4 hands `lua_settings { }` over here; 2.3 calls it without arguments
-- and wants 0 back.
function script_init(args)
  if type(args) == "table" then lua_settings = args end
  settings = nil
  return 0
end

function auth_password_verify(req, password)
  local status, json, text = post("/auth", {
    username = req.user,
    password = password,
    real_rip = req.real_rip or req.remote_ip or "",
    service = req.service or "",
  })
  if status == 200 and json and json.success == true then
    local fields = field_table(json, "userdb_")
    if type(json.user) == "string" and json.user ~= "" then
      fields.user = json.user
    end
    return dovecot.auth.PASSDB_RESULT_OK, fields
  elseif status == 200 then
    req:log_error("mailcow-ldap-auth: unexpected answer to /auth: " .. tostring(text))
    return dovecot.auth.PASSDB_RESULT_INTERNAL_FAILURE, ""
  elseif status == 401 and json and json.nologin == true and type(json.reason) == "string"
      and json.reason ~= "" and not json.error then
    -- The password was right but the login is refused, with a reason the user
    -- may read (an expired AD password, say). Dovecot (2.3 and 2.4) takes a
    -- successful passdb with the nologin field as a failed login whose text is
    -- the reason field; no other passdb is asked.
    return dovecot.auth.PASSDB_RESULT_OK, { nologin = "y", reason = json.reason }
  elseif status == 401 and json and json.not_ours == true and not json.error then
    -- Not serve's to decide. PASSDB_RESULT_NEXT makes Dovecot (2.3 and 2.4,
    -- auth-request.c) go on to the next passdb whatever its result_failure
    -- says, and caches nothing; the refusals serve decided stay final.
    -- (post() resolved the settings already: a bad not_ours failed it.)
    if resolve_settings().not_ours == "next" then
      return dovecot.auth.PASSDB_RESULT_NEXT, ""
    end
    return dovecot.auth.PASSDB_RESULT_PASSWORD_MISMATCH, ""
  elseif status == 401 and not (json and json.error) then
    -- A rejection is a bare {"success":false}. (A missing or wrong X-Auth-Secret
    -- is a 403, a configuration problem that falls through to an internal failure.)
    return dovecot.auth.PASSDB_RESULT_PASSWORD_MISMATCH, ""
  elseif status == 404 then
    return dovecot.auth.PASSDB_RESULT_USER_UNKNOWN, ""
  end
  req:log_error("mailcow-ldap-auth: temporary failure: " .. describe(status, json, text))
  return dovecot.auth.PASSDB_RESULT_INTERNAL_FAILURE, ""
end

-- A passdb lookup without a password (non-plaintext mechanisms such as CRAM-MD5,
-- `doveadm auth lookup`): serve can only verify passwords, never hand one out.
function auth_passdb_lookup(req)
  local status, json, text = post("/lookup", { username = req.user })
  if status == 404 then
    return dovecot.auth.PASSDB_RESULT_USER_UNKNOWN, ""
  elseif status == 200 then
    return dovecot.auth.PASSDB_RESULT_SCHEME_NOT_AVAILABLE,
      "mailcow-ldap-auth verifies passwords only: use a plaintext mechanism (PLAIN, LOGIN)"
  end
  req:log_error("mailcow-ldap-auth: temporary failure: " .. describe(status, json, text))
  return dovecot.auth.PASSDB_RESULT_INTERNAL_FAILURE, ""
end

function auth_userdb_lookup(req)
  local status, json, text = post("/lookup", { username = req.user })
  if status == 200 and json and json.success == true then
    return dovecot.auth.USERDB_RESULT_OK, field_table(json, "")
  elseif status == 404 then
    return dovecot.auth.USERDB_RESULT_USER_UNKNOWN, ""
  end
  req:log_error("mailcow-ldap-auth: temporary failure: " .. describe(status, json, text))
  return dovecot.auth.USERDB_RESULT_INTERNAL_FAILURE, ""
end
