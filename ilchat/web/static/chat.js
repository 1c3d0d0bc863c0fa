/*
 * ilchat's built-in chat page.
 *
 * Plain JavaScript, no library and nothing from the network but our own server, so that it works
 * on a closed network. It speaks Engine.IO v4 / Socket.IO v5 over a native WebSocket with the same
 * events as ILIAS's repository chat (login, enterRoom, message, userlist, notice, typing), logging
 * in with a name only.
 *
 * Safety rule: text that came from a user or from the server is only ever put into the page with
 * textContent (or as an attribute value through the DOM API), never through innerHTML.
 */
"use strict";

(function () {
  var config = JSON.parse(document.getElementById("ilchat-config").textContent);

  // --- Engine.IO v4 / Socket.IO v5 over a WebSocket -----------------------------------------

  /*
   * Engine.IO packets are text frames: one digit for the type, then the data.
   *   0 open (JSON handshake), 1 close, 2 ping, 3 pong, 4 message, 6 noop.
   * A Socket.IO packet rides in a message packet: a digit for its type, "/namespace," unless the
   * namespace is "/", an optional ack id, then a JSON array or object.
   *   0 CONNECT, 1 DISCONNECT, 2 EVENT, 3 ACK, 4 CONNECT_ERROR.
   * The server pings every pingInterval ms; without a ping for pingInterval + pingTimeout ms we
   * take the connection as dead, as socket.io-client does.
   */
  function SocketIOClient(url, namespace, handlers) {
    this.url = url;
    this.namespace = namespace;
    this.handlers = handlers;
    this.ws = null;
    this.connected = false;
    this.closedByUs = false;
    this.attempt = 0;
    this.reconnectTimer = null;
    this.pingTimer = null;
  }

  SocketIOClient.prototype.open = function () {
    var self = this;
    this.closedByUs = false;
    clearTimeout(this.reconnectTimer);
    var ws;
    try {
      ws = new WebSocket(this.url);
    } catch (e) {
      this.scheduleReconnect();
      return;
    }
    this.ws = ws;
    ws.onmessage = function (event) {
      if (ws === self.ws && typeof event.data === "string") {
        self.onEnginePacket(event.data);
      }
    };
    ws.onclose = function () {
      if (ws === self.ws) {
        self.onTransportClosed();
      }
    };
    ws.onerror = function () {
      // onclose follows and does the work.
    };
  };

  SocketIOClient.prototype.nsPrefix = function () {
    return this.namespace === "/" ? "" : this.namespace + ",";
  };

  SocketIOClient.prototype.send = function (text) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(text);
      return true;
    }
    return false;
  };

  SocketIOClient.prototype.emit = function () {
    var args = Array.prototype.slice.call(arguments);
    if (!this.connected) {
      return false;
    }
    return this.send("42" + this.nsPrefix() + JSON.stringify(args));
  };

  SocketIOClient.prototype.armPingTimer = function () {
    var self = this;
    clearTimeout(this.pingTimer);
    this.pingTimer = setTimeout(function () {
      // No ping from the server in time: the connection is dead even if TCP has not noticed.
      if (self.ws) {
        self.ws.close();
      }
      self.onTransportClosed();
    }, this.pingInterval + this.pingTimeout);
  };

  SocketIOClient.prototype.onEnginePacket = function (data) {
    var type = data.charAt(0);
    if (type === "0") {
      var handshake = JSON.parse(data.slice(1));
      this.pingInterval = handshake.pingInterval || 25000;
      this.pingTimeout = handshake.pingTimeout || 20000;
      this.armPingTimer();
      this.send("40" + this.nsPrefix());
    } else if (type === "2") {
      this.armPingTimer();
      this.send("3" + data.slice(1));
    } else if (type === "4") {
      this.onSocketPacket(data.slice(1));
    } else if (type === "1") {
      this.ws.close();
    }
  };

  SocketIOClient.prototype.onSocketPacket = function (data) {
    var type = data.charAt(0);
    var rest = data.slice(1);
    var namespace = "/";
    if (rest.charAt(0) === "/") {
      var comma = rest.indexOf(",");
      namespace = comma < 0 ? rest : rest.slice(0, comma);
      rest = comma < 0 ? "" : rest.slice(comma + 1);
    }
    if (namespace !== this.namespace) {
      return;
    }
    var ackId = /^\d+/.exec(rest);
    if (ackId) {
      rest = rest.slice(ackId[0].length);
    }
    var payload = rest ? JSON.parse(rest) : null;
    if (type === "0") {
      this.connected = true;
      this.attempt = 0;
      this.handlers.connect();
    } else if (type === "2" && Array.isArray(payload)) {
      this.handlers.event(payload[0], payload.slice(1));
    } else if (type === "4") {
      this.handlers.connectError(payload && payload.message ? payload.message : "refused");
      this.closedByUs = true;
      this.ws.close();
      this.scheduleReconnect();
    } else if (type === "1") {
      this.ws.close();
    }
  };

  SocketIOClient.prototype.onTransportClosed = function () {
    clearTimeout(this.pingTimer);
    var wasConnected = this.connected;
    this.connected = false;
    this.ws = null;
    if (wasConnected) {
      this.handlers.disconnect();
    }
    if (!this.closedByUs) {
      this.scheduleReconnect();
    }
  };

  SocketIOClient.prototype.scheduleReconnect = function () {
    var self = this;
    clearTimeout(this.reconnectTimer);
    // Exponential backoff with jitter (0.5 s, 1 s, 2 s, ... at most 10 s), so that a restarted
    // server is not hit by every browser at the same instant.
    var base = Math.min(10000, 500 * Math.pow(2, this.attempt));
    var delay = Math.round(base * (0.5 + Math.random() * 0.5));
    this.attempt += 1;
    this.handlers.reconnecting(delay);
    this.reconnectTimer = setTimeout(function () {
      self.open();
    }, delay);
  };

  SocketIOClient.prototype.close = function () {
    this.closedByUs = true;
    clearTimeout(this.reconnectTimer);
    clearTimeout(this.pingTimer);
    if (this.connected) {
      this.send("41" + this.nsPrefix());
    }
    this.connected = false;
    if (this.ws) {
      this.ws.close();
      this.ws = null;
    }
  };

  // --- page state -----------------------------------------------------------------------------

  var $ = function (id) { return document.getElementById(id); };
  var ui = {
    status: $("status"),
    welcome: $("welcome"),
    welcomeText: $("welcome-text"),
    loginForm: $("login-form"),
    nameInput: $("name-input"),
    loginButton: $("login-button"),
    loginError: $("login-error"),
    chat: $("chat"),
    roomList: $("room-list"),
    roomTitle: $("room-title"),
    messages: $("messages"),
    typing: $("typing"),
    messageForm: $("message-form"),
    messageInput: $("message-input"),
    messageError: $("message-error"),
    userList: $("user-list"),
    userCount: $("user-count"),
    logoutButton: $("logout-button"),
    appTitle: $("app-title")
  };

  var state = {
    name: null,        // the name we log in with (kept for reconnects)
    token: null,       // lets a reconnect take back our own name
    me: null,          // {id, username}
    loggedIn: false,
    wantLogin: false,
    rooms: [],         // [{id, title}]
    current: null,     // the room id shown
    perRoom: {}        // id -> {messages: [entries], users: {}, typing: {id: {name, timer}}, unread}
  };

  var MAX_KEPT_MESSAGES = 500;

  function roomState(roomId) {
    var key = String(roomId);
    if (!state.perRoom[key]) {
      state.perRoom[key] = { messages: [], users: {}, typing: {}, unread: 0, entered: false };
    }
    return state.perRoom[key];
  }

  function setStatus(text, kind) {
    ui.status.textContent = text;
    ui.status.className = "status" + (kind ? " " + kind : "");
  }

  function formatTime(ms) {
    var date = new Date(ms);
    return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  function toMs(timestamp) {
    // ILIAS payloads carry milliseconds; stored history carries seconds.
    var n = Number(timestamp) || Date.now();
    return n < 1e11 ? n * 1000 : n;
  }

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) {
      node.className = className;
    }
    if (text !== undefined && text !== null) {
      node.textContent = String(text);
    }
    return node;
  }

  // --- rendering ------------------------------------------------------------------------------

  function renderEntry(entry) {
    var item = el("li", "entry " + entry.kind);
    var time = el("time", "time", formatTime(entry.time));
    time.setAttribute("datetime", new Date(entry.time).toISOString());
    item.appendChild(time);
    if (entry.kind === "message") {
      item.appendChild(el("span", "from" + (entry.mine ? " mine" : ""), entry.from));
      if (entry.to) {
        item.appendChild(el("span", "to", "→ " + entry.to));
      }
      item.appendChild(el("span", "content", entry.text));
    } else {
      item.appendChild(el("span", "content", entry.text));
    }
    return item;
  }

  function renderMessages() {
    var room = roomState(state.current);
    var list = ui.messages;
    while (list.firstChild) {
      list.removeChild(list.firstChild);
    }
    var fragment = document.createDocumentFragment();
    room.messages.forEach(function (entry) {
      fragment.appendChild(renderEntry(entry));
    });
    list.appendChild(fragment);
    list.scrollTop = list.scrollHeight;
  }

  function addEntry(roomId, entry) {
    var room = roomState(roomId);
    room.messages.push(entry);
    if (room.messages.length > MAX_KEPT_MESSAGES) {
      room.messages.splice(0, room.messages.length - MAX_KEPT_MESSAGES);
    }
    if (String(roomId) === String(state.current)) {
      var list = ui.messages;
      var atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
      list.appendChild(renderEntry(entry));
      while (list.childNodes.length > MAX_KEPT_MESSAGES) {
        list.removeChild(list.firstChild);
      }
      if (atBottom || entry.mine) {
        list.scrollTop = list.scrollHeight;
      }
    } else if (entry.kind === "message") {
      room.unread += 1;
      renderRooms();
    }
  }

  function renderRooms() {
    var list = ui.roomList;
    while (list.firstChild) {
      list.removeChild(list.firstChild);
    }
    state.rooms.forEach(function (room) {
      var item = el("li");
      var button = el("button", "room-button", room.title);
      button.type = "button";
      button.setAttribute("data-room-id", String(room.id));
      if (String(room.id) === String(state.current)) {
        button.setAttribute("aria-current", "true");
      }
      var unread = roomState(room.id).unread;
      if (unread > 0) {
        var badge = el("span", "unread", String(unread));
        badge.setAttribute("aria-label", unread + " unread");
        button.appendChild(badge);
      }
      button.addEventListener("click", function () {
        showRoom(room.id);
        ui.messageInput.focus();
      });
      item.appendChild(button);
      list.appendChild(item);
    });
  }

  function renderUsers() {
    var room = roomState(state.current);
    var list = ui.userList;
    while (list.firstChild) {
      list.removeChild(list.firstChild);
    }
    var users = Object.keys(room.users).map(function (key) { return room.users[key]; });
    users.sort(function (a, b) {
      return String(a.username).localeCompare(String(b.username));
    });
    users.forEach(function (user) {
      var item = el("li", "user");
      item.appendChild(el("span", "user-name", user.username));
      if (state.me && String(user.id) === String(state.me.id)) {
        item.appendChild(el("span", "tag", "you"));
      }
      if (user.irc || user.source === "irc" || Number(user.id) < 0) {
        item.appendChild(el("span", "tag irc", "IRC"));
      }
      list.appendChild(item);
    });
    ui.userCount.textContent = "(" + users.length + ")";
  }

  function renderTyping() {
    var room = roomState(state.current);
    var names = Object.keys(room.typing).map(function (key) { return room.typing[key].name; });
    if (names.length === 0) {
      ui.typing.textContent = "";
    } else if (names.length === 1) {
      ui.typing.textContent = names[0] + " is typing…";
    } else if (names.length <= 3) {
      ui.typing.textContent = names.join(", ") + " are typing…";
    } else {
      ui.typing.textContent = "Several people are typing…";
    }
  }

  function showRoom(roomId) {
    if (state.current !== null && String(state.current) !== String(roomId)) {
      stopTyping();
    }
    state.current = roomId;
    var room = roomState(roomId);
    room.unread = 0;
    var info = state.rooms.filter(function (r) { return String(r.id) === String(roomId); })[0];
    ui.roomTitle.textContent = info ? info.title : "";
    renderRooms();
    renderMessages();
    renderUsers();
    renderTyping();
  }

  function showChat() {
    ui.welcome.hidden = true;
    ui.chat.hidden = false;
  }

  function showWelcome(errorText) {
    ui.chat.hidden = true;
    ui.welcome.hidden = false;
    ui.loginButton.disabled = false;
    ui.loginError.textContent = errorText || "";
    ui.nameInput.focus();
  }

  // --- server events --------------------------------------------------------------------------

  var NOTICES = {
    connect: function (d) { return (d && d.username) + " joined"; },
    disconnected: function (d) { return (d && d.username) + " left"; },
    left: function (d) { return (d && d.username) + " left"; },
    welcome_to_chat: function (d) { return "Welcome to " + ((d && d.title) || "the chat") + ", " + (d && d.username) + "!"; },
    history_has_been_cleared: function () { return "The history of this room has been cleared."; },
    user_kicked: function (d) { return (d && d.username) + " was removed from the room"; },
    kicked_from_private_room: function () { return "You were removed from this room."; },
    message_too_long: function (d) {
      return "Your message was too long and was not sent" +
        (d && d.max_length ? " (at most " + d.max_length + " characters)." : ".");
    }
  };

  function senderName(payload) {
    return payload.from && payload.from.username !== undefined ? payload.from.username : "?";
  }

  function messageEntry(payload) {
    return {
      kind: "message",
      time: toMs(payload.timestamp),
      from: senderName(payload),
      to: payload.target && !payload.target.public ? payload.target.username : null,
      text: typeof payload.content === "string" ? payload.content : String(payload.content),
      mine: !!(state.me && payload.from && String(payload.from.id) === String(state.me.id))
    };
  }

  var events = {
    loggedIn: function (info) {
      info = info || {};
      state.loggedIn = true;
      state.me = { id: info.id, username: info.username || state.name };
      state.name = state.me.username;
      if (info.token) {
        state.token = info.token;
      }
      if (Array.isArray(info.rooms) && info.rooms.length) {
        state.rooms = info.rooms;
      }
      try {
        sessionStorage.setItem("ilchat.name", state.name);
        if (state.token) {
          sessionStorage.setItem("ilchat.token", state.token);
        }
      } catch (e) { /* private mode: no reconnect after a reload, which is fine */ }
      ui.loginError.textContent = "";
      setStatus("Connected as " + state.name, "ok");
      showChat();
      if (state.current === null && state.rooms.length) {
        state.current = state.rooms[0].id;
      }
      // Enter every room, as an IRC client joins its channels: messages of the other rooms
      // arrive too and show as unread counts.
      state.rooms.forEach(function (room) {
        var rs = roomState(room.id);
        rs.messages = [];
        rs.users = {};
        rs.typing = {};
        client.emit("enterRoom", room.id);
      });
      showRoom(state.current);
      if (document.activeElement === ui.nameInput || document.activeElement === ui.loginButton ||
          document.activeElement === document.body) {
        ui.messageInput.focus();
      }
    },

    loginFailed: function (info) {
      state.loggedIn = false;
      state.wantLogin = false;
      state.token = null;
      var text = (info && info.message) || "That name cannot be used.";
      setStatus("Connected", "ok");
      showWelcome(text);
    },

    history: function (info) {
      if (!info || !Array.isArray(info.messages)) {
        return;
      }
      var room = roomState(info.roomId);
      var entries = info.messages.map(messageEntry);
      entries.forEach(function (entry) { entry.history = true; });
      room.messages = entries.concat(room.messages);
      if (String(info.roomId) === String(state.current)) {
        renderMessages();
      }
    },

    message: function (payload) {
      if (!payload) {
        return;
      }
      addEntry(payload.roomId, messageEntry(payload));
      var room = roomState(payload.roomId);
      if (payload.from && room.typing[String(payload.from.id)]) {
        clearTimeout(room.typing[String(payload.from.id)].timer);
        delete room.typing[String(payload.from.id)];
        if (String(payload.roomId) === String(state.current)) {
          renderTyping();
        }
      }
    },

    notice: function (payload) {
      if (!payload) {
        return;
      }
      var make = NOTICES[payload.content];
      var text = make ? make(payload.data) : (payload.data && payload.data.message) || payload.content;
      addEntry(payload.roomId, { kind: "notice", time: toMs(payload.timestamp), text: text });
    },

    userlist: function (payload) {
      if (!payload) {
        return;
      }
      roomState(payload.roomId).users = payload.users || {};
      if (String(payload.roomId) === String(state.current)) {
        renderUsers();
      }
    },

    private_room_entered: function (payload) {
      if (payload) {
        roomState(payload.roomId).entered = true;
      }
    },

    userStartedTyping: function (payload) {
      typingChanged(payload, true);
    },

    userStoppedTyping: function (payload) {
      typingChanged(payload, false);
    },

    clear: function (payload) {
      if (payload) {
        roomState(payload.roomId).messages = [];
        if (String(payload.roomId) === String(state.current)) {
          renderMessages();
        }
      }
    },

    refused: function (info) {
      var text = (info && info.message) || "The server refused that.";
      ui.messageError.textContent = text;
      clearTimeout(events.refused.timer);
      events.refused.timer = setTimeout(function () {
        ui.messageError.textContent = "";
      }, 8000);
    },

    shutdown: function () {
      state.loggedIn = false;
      state.wantLogin = false;
      client.close();
      setStatus("The server ended the session.", "error");
      showWelcome("The server ended your session. Pick a name to join again.");
      client.open();
    }
  };

  function typingChanged(payload, started) {
    if (!payload) {
      return;
    }
    var who;
    try {
      // ILIAS sends the subscriber as a JSON string.
      who = typeof payload.subscriber === "string" ? JSON.parse(payload.subscriber) : payload.subscriber;
    } catch (e) {
      return;
    }
    if (!who || (state.me && String(who.id) === String(state.me.id))) {
      return;
    }
    var room = roomState(payload.roomId);
    var key = String(who.id);
    if (room.typing[key]) {
      clearTimeout(room.typing[key].timer);
      delete room.typing[key];
    }
    if (started) {
      // A stop can get lost (a closed tab); forget a typist after a while anyway.
      room.typing[key] = {
        name: who.username,
        timer: setTimeout(function () {
          delete room.typing[key];
          if (String(payload.roomId) === String(state.current)) {
            renderTyping();
          }
        }, 15000)
      };
    }
    if (String(payload.roomId) === String(state.current)) {
      renderTyping();
    }
  }

  // --- connection -------------------------------------------------------------------------------

  function socketUrl() {
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    var path = config.path.replace(/\/?$/, "/");
    return scheme + location.host + path + "?EIO=4&transport=websocket";
  }

  function login() {
    if (state.name && client.connected) {
      setStatus("Logging in…");
      client.emit("login", state.name, state.token);
    }
  }

  var client = new SocketIOClient(socketUrl(), config.namespace, {
    connect: function () {
      if (state.wantLogin) {
        login();
      } else {
        setStatus("Connected", "ok");
      }
    },
    disconnect: function () {
      state.loggedIn = false;
      setStatus("Connection lost. Reconnecting…", "error");
    },
    connectError: function (message) {
      setStatus("The server refused the connection: " + message, "error");
    },
    reconnecting: function (delay) {
      setStatus("Not connected. Trying again in " + Math.ceil(delay / 1000) + " s…", "error");
    },
    event: function (name, args) {
      var handler = Object.prototype.hasOwnProperty.call(events, name) ? events[name] : null;
      if (handler) {
        try {
          handler.apply(null, args);
        } catch (e) {
          if (window.console) {
            window.console.error("ilchat: handling " + name + " failed", e);
          }
        }
      }
    }
  });

  // --- typing, sending, logging in ---------------------------------------------------------------

  var typing = { room: null, idleTimer: null };

  function stopTyping() {
    clearTimeout(typing.idleTimer);
    if (typing.room !== null) {
      client.emit("userStoppedTyping", typing.room);
      typing.room = null;
    }
  }

  ui.messageInput.addEventListener("input", function () {
    if (!state.loggedIn || state.current === null) {
      return;
    }
    if (ui.messageInput.value === "") {
      stopTyping();
      return;
    }
    if (typing.room === null) {
      typing.room = state.current;
      client.emit("userStartedTyping", typing.room);
    }
    clearTimeout(typing.idleTimer);
    typing.idleTimer = setTimeout(stopTyping, 3000);
  });

  ui.messageForm.addEventListener("submit", function (event) {
    event.preventDefault();
    var text = ui.messageInput.value;
    if (!text.trim()) {
      return;
    }
    if (config.maxMessageLength && text.length > config.maxMessageLength) {
      ui.messageError.textContent = "The message is too long (at most " + config.maxMessageLength + " characters).";
      return;
    }
    if (!state.loggedIn || !client.emit("message", { content: text, format: {} }, state.current)) {
      ui.messageError.textContent = "Not connected; the message was not sent.";
      return;
    }
    stopTyping();
    ui.messageError.textContent = "";
    ui.messageInput.value = "";
    ui.messageInput.focus();
  });

  ui.loginForm.addEventListener("submit", function (event) {
    event.preventDefault();
    var name = ui.nameInput.value.trim();
    if (!name) {
      ui.loginError.textContent = "Please enter a name.";
      ui.nameInput.focus();
      return;
    }
    if (config.maxNameLength && name.length > config.maxNameLength) {
      ui.loginError.textContent = "A name has at most " + config.maxNameLength + " characters.";
      ui.nameInput.focus();
      return;
    }
    if (state.name !== name) {
      state.token = null;
    }
    state.name = name;
    state.wantLogin = true;
    ui.loginError.textContent = "";
    if (client.connected) {
      ui.loginButton.disabled = true;
      login();
      setTimeout(function () { ui.loginButton.disabled = false; }, 3000);
    } else {
      ui.loginError.textContent = "Not connected yet; you will be logged in as soon as the connection is back.";
    }
  });

  ui.logoutButton.addEventListener("click", function () {
    state.wantLogin = false;
    state.loggedIn = false;
    // The token stays in memory: joining again under the same name during the server's
    // disconnect grace takes the name back instead of finding it "in use".
    state.me = null;
    state.current = null;
    state.perRoom = {};
    try {
      sessionStorage.removeItem("ilchat.token");
    } catch (e) { /* ignore */ }
    client.close();
    showWelcome("");
    client.open();
  });

  // --- start ------------------------------------------------------------------------------------

  document.title = config.title;
  ui.appTitle.textContent = config.title;
  ui.welcomeText.textContent = config.welcome;
  state.rooms = Array.isArray(config.rooms) ? config.rooms : [];
  if (config.maxNameLength) {
    ui.nameInput.maxLength = config.maxNameLength;
  }
  if (config.maxMessageLength) {
    ui.messageInput.maxLength = config.maxMessageLength;
  }
  try {
    // After a reload in the same tab, log back in with the same name.
    var savedName = sessionStorage.getItem("ilchat.name");
    if (savedName) {
      ui.nameInput.value = savedName;
      var savedToken = sessionStorage.getItem("ilchat.token");
      if (savedToken) {
        state.name = savedName;
        state.token = savedToken;
        state.wantLogin = true;
      }
    }
  } catch (e) { /* ignore */ }
  ui.nameInput.focus();
  client.open();

  // For the end-to-end tests and curious operators: read-only view of the connection state.
  window.ilchat = {
    state: state,
    isConnected: function () { return client.connected; }
  };
})();
