-- The same tables as mysql_schema.sql, for the embedded SQLite database of the standalone chat.
-- ilchat creates these itself when database.type is "sqlite" (every statement is idempotent).
-- The *_seq tables use AUTOINCREMENT so that an id is never handed out twice, even after the
-- lower rows are deleted (the ILIAS "next id" scheme, spec section 4.2).
CREATE TABLE IF NOT EXISTS chatroom_settings (
    room_id INTEGER NOT NULL PRIMARY KEY,
    object_id INTEGER DEFAULT 0,
    room_type VARCHAR(20) DEFAULT 'repository',
    allow_anonymous INTEGER DEFAULT 0,
    allow_custom_usernames INTEGER DEFAULT 0,
    enable_history INTEGER DEFAULT 0,
    restrict_history INTEGER DEFAULT 0,
    autogen_usernames VARCHAR(50) DEFAULT 'Anonymous #',
    allow_private_rooms INTEGER DEFAULT 0,
    display_past_msgs INTEGER DEFAULT 0,
    private_rooms_enabled INTEGER DEFAULT 0,
    online_status INTEGER DEFAULT 0
);
CREATE TABLE IF NOT EXISTS chatroom_users (
    room_id INTEGER NOT NULL,
    user_id INTEGER NOT NULL,
    userdata TEXT,
    connected INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (room_id, user_id)
);
CREATE TABLE IF NOT EXISTS chatroom_sessions (
    sess_id INTEGER NOT NULL PRIMARY KEY,
    room_id INTEGER NOT NULL DEFAULT 0,
    user_id INTEGER NOT NULL DEFAULT 0,
    userdata TEXT,
    connected INTEGER NOT NULL DEFAULT 0,
    disconnected INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS chatroom_history (
    hist_id INTEGER NOT NULL PRIMARY KEY,
    room_id INTEGER NOT NULL DEFAULT 0,
    message TEXT,
    timestamp INTEGER NOT NULL DEFAULT 0,
    sub_room INTEGER DEFAULT 0
);
CREATE INDEX IF NOT EXISTS chatroom_history_room ON chatroom_history (room_id, hist_id);
CREATE TABLE IF NOT EXISTS chatroom_history_seq (
    sequence INTEGER PRIMARY KEY AUTOINCREMENT
);
CREATE TABLE IF NOT EXISTS chatroom_sessions_seq (
    sequence INTEGER PRIMARY KEY AUTOINCREMENT
);
CREATE TABLE IF NOT EXISTS chatroom_bans (
    room_id INTEGER NOT NULL,
    user_id INTEGER NOT NULL,
    timestamp INTEGER NOT NULL DEFAULT 0,
    remark TEXT,
    actor_id INTEGER,
    PRIMARY KEY (room_id, user_id)
);
CREATE TABLE IF NOT EXISTS osc_conversation (
    id VARCHAR(255) NOT NULL PRIMARY KEY,
    is_group INTEGER NOT NULL DEFAULT 0,
    participants TEXT
);
CREATE TABLE IF NOT EXISTS osc_messages (
    id VARCHAR(255) NOT NULL PRIMARY KEY,
    conversation_id VARCHAR(255) NOT NULL,
    user_id INTEGER NOT NULL DEFAULT 0,
    message TEXT,
    timestamp INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS osc_messages_i1 ON osc_messages (conversation_id, timestamp);
CREATE TABLE IF NOT EXISTS osc_activity (
    conversation_id VARCHAR(255) NOT NULL,
    user_id INTEGER NOT NULL DEFAULT 0,
    timestamp INTEGER NOT NULL DEFAULT 0,
    is_closed INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (conversation_id, user_id)
);
CREATE TABLE IF NOT EXISTS usr_pref (
    usr_id INTEGER NOT NULL DEFAULT 0,
    keyword VARCHAR(40) NOT NULL,
    value TEXT,
    PRIMARY KEY (usr_id, keyword)
);
-- ILIAS compares logins case-insensitively (utf8mb4_unicode_ci); NOCASE does the same for ASCII.
CREATE TABLE IF NOT EXISTS usr_data (
    usr_id INTEGER NOT NULL PRIMARY KEY,
    login VARCHAR(190) COLLATE NOCASE,
    passwd VARCHAR(80),
    passwd_enc_type VARCHAR(10),
    firstname VARCHAR(128),
    lastname VARCHAR(128),
    active INTEGER DEFAULT 1
);
CREATE INDEX IF NOT EXISTS usr_data_login ON usr_data (login);
CREATE TABLE IF NOT EXISTS usr_session (
    session_id VARCHAR(250) NOT NULL DEFAULT '' PRIMARY KEY,
    expires INTEGER NOT NULL DEFAULT 0,
    data TEXT,
    ctime INTEGER NOT NULL DEFAULT 0,
    user_id INTEGER NOT NULL DEFAULT 0,
    last_remind_ts INTEGER NOT NULL DEFAULT 0,
    type INTEGER,
    createtime INTEGER,
    remote_addr VARCHAR(50),
    context VARCHAR(80)
);
