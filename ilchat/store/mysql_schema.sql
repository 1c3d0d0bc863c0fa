-- The ILIAS tables the chat server reads and writes, as ILIAS creates them on MySQL/MariaDB (utf8mb4).
-- ILIAS owns these tables: ilchat never creates or alters them on an ILIAS database. The tests use this
-- file to build an ILIAS-shaped database on the real MariaDB server (tests/support/db.py).
-- Statements are separated by a semicolon at the end of a line.
-- chatroom_settings has more columns in ILIAS; the chat server reads room_id only.
CREATE TABLE chatroom_settings (
    room_id INT NOT NULL PRIMARY KEY,
    object_id INT DEFAULT 0,
    room_type VARCHAR(20) DEFAULT 'repository',
    allow_anonymous TINYINT DEFAULT 0,
    allow_custom_usernames TINYINT DEFAULT 0,
    enable_history TINYINT DEFAULT 0,
    restrict_history TINYINT DEFAULT 0,
    autogen_usernames VARCHAR(50) DEFAULT 'Anonymous #',
    allow_private_rooms TINYINT DEFAULT 0,
    display_past_msgs INT DEFAULT 0,
    private_rooms_enabled INT DEFAULT 0,
    online_status INT DEFAULT 0
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
CREATE TABLE chatroom_users (
    room_id INT NOT NULL,
    user_id INT NOT NULL,
    userdata VARCHAR(4000),
    connected INT NOT NULL DEFAULT 0,
    PRIMARY KEY (room_id, user_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
CREATE TABLE chatroom_sessions (
    sess_id INT NOT NULL PRIMARY KEY,
    room_id INT NOT NULL DEFAULT 0,
    user_id INT NOT NULL DEFAULT 0,
    userdata VARCHAR(4000),
    connected INT NOT NULL DEFAULT 0,
    disconnected INT NOT NULL DEFAULT 0,
    INDEX i1 (room_id),
    INDEX i2 (user_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
CREATE TABLE chatroom_history (
    hist_id INT NOT NULL PRIMARY KEY,
    room_id INT NOT NULL DEFAULT 0,
    message VARCHAR(4000),
    timestamp INT NOT NULL DEFAULT 0,
    sub_room INT DEFAULT 0,
    INDEX i1 (room_id, sub_room)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
CREATE TABLE chatroom_history_seq (
    sequence INT NOT NULL AUTO_INCREMENT PRIMARY KEY
) ENGINE=InnoDB;
CREATE TABLE chatroom_sessions_seq (
    sequence INT NOT NULL AUTO_INCREMENT PRIMARY KEY
) ENGINE=InnoDB;
CREATE TABLE chatroom_bans (
    room_id INT NOT NULL,
    user_id INT NOT NULL,
    timestamp INT NOT NULL DEFAULT 0,
    remark VARCHAR(1000),
    actor_id INT,
    PRIMARY KEY (room_id, user_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
CREATE TABLE osc_conversation (
    id VARCHAR(255) NOT NULL PRIMARY KEY,
    is_group TINYINT NOT NULL DEFAULT 0,
    participants VARCHAR(4000)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
CREATE TABLE osc_messages (
    id VARCHAR(255) NOT NULL PRIMARY KEY,
    conversation_id VARCHAR(255) NOT NULL,
    user_id INT NOT NULL DEFAULT 0,
    message LONGTEXT,
    timestamp BIGINT NOT NULL DEFAULT 0,
    INDEX i1 (conversation_id, timestamp)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
CREATE TABLE osc_activity (
    conversation_id VARCHAR(255) NOT NULL,
    user_id INT NOT NULL DEFAULT 0,
    timestamp BIGINT NOT NULL DEFAULT 0,
    is_closed TINYINT NOT NULL DEFAULT 0,
    PRIMARY KEY (conversation_id, user_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
CREATE TABLE usr_pref (
    usr_id INT NOT NULL DEFAULT 0,
    keyword VARCHAR(40) NOT NULL,
    value VARCHAR(4000),
    PRIMARY KEY (usr_id, keyword)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
CREATE TABLE usr_data (
    usr_id INT NOT NULL PRIMARY KEY,
    login VARCHAR(190),
    passwd VARCHAR(80),
    passwd_enc_type VARCHAR(10),
    firstname VARCHAR(128),
    lastname VARCHAR(128),
    active TINYINT DEFAULT 1,
    INDEX i1 (login)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
-- ILIAS's PHP sessions (ilSessionDBHandler): session_id is PHP's session id as the cookie carries
-- it, expires is Unix seconds, user_id 0 (or the anonymous user) before a login. ilchat only reads it.
CREATE TABLE usr_session (
    session_id VARCHAR(250) NOT NULL DEFAULT '' PRIMARY KEY,
    expires INT NOT NULL DEFAULT 0,
    data LONGTEXT,
    ctime INT NOT NULL DEFAULT 0,
    user_id INT NOT NULL DEFAULT 0,
    last_remind_ts INT NOT NULL DEFAULT 0,
    type INT,
    createtime INT,
    remote_addr VARCHAR(50),
    context VARCHAR(80),
    INDEX i1 (expires),
    INDEX i2 (user_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
