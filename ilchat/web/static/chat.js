/*
 * ilchat's built-in chat page.
 *
 * Plain JavaScript, no library and nothing from the network but our own server, so that it works
 * on a closed network. It speaks Engine.IO v4 / Socket.IO v5 over a native WebSocket with the same
 * events as ILIAS's repository chat (login, enterRoom, message, userlist, notice, typing), logging
 * in with a name only; plus ilchat's own leave, rename and renamed events.
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

  // --- strings -------------------------------------------------------------------------------

  /*
   * One strings file per language (static/strings/<code>.json, embedded by the server); the
   * first of the browser's languages we have wins, English otherwise. t(key, {name: ...}) fills
   * the {name} slots.
   */
  var allStrings = config.strings || {};
  var language = (function () {
    var wanted = (navigator.languages && navigator.languages.length) ? navigator.languages : [navigator.language || "en"];
    for (var i = 0; i < wanted.length; i += 1) {
      var code = String(wanted[i] || "").toLowerCase();
      if (allStrings[code]) {
        return code;
      }
      var base = code.split("-")[0];
      if (allStrings[base]) {
        return base;
      }
    }
    return "en";
  })();
  var strings = allStrings[language] || {};
  var fallback = allStrings.en || {};

  function t(key, values) {
    var text = Object.prototype.hasOwnProperty.call(strings, key) ? strings[key] : fallback[key];
    if (text === undefined) {
      text = key;
    }
    return String(text).replace(/\{(\w+)\}/g, function (whole, name) {
      return values && values[name] !== undefined ? String(values[name]) : whole;
    });
  }

  function translatePage() {
    document.documentElement.lang = language;
    Array.prototype.forEach.call(document.querySelectorAll("[data-i18n]"), function (node) {
      node.textContent = t(node.getAttribute("data-i18n"));
    });
    Array.prototype.forEach.call(document.querySelectorAll("[data-i18n-placeholder]"), function (node) {
      node.setAttribute("placeholder", t(node.getAttribute("data-i18n-placeholder")));
    });
    Array.prototype.forEach.call(document.querySelectorAll("[data-i18n-title]"), function (node) {
      node.setAttribute("title", t(node.getAttribute("data-i18n-title")));
    });
    Array.prototype.forEach.call(document.querySelectorAll("[data-i18n-aria-label]"), function (node) {
      node.setAttribute("aria-label", t(node.getAttribute("data-i18n-aria-label")));
    });
  }

  // --- page state -----------------------------------------------------------------------------

  var $ = function (id) { return document.getElementById(id); };
  var ui = {
    status: $("status"),
    welcome: $("welcome"),
    welcomeText: $("welcome-text"),
    infoText: $("info-text"),
    loginForm: $("login-form"),
    nameInput: $("name-input"),
    loginButton: $("login-button"),
    loginError: $("login-error"),
    chat: $("chat"),
    roomList: $("room-list"),
    roomTitle: $("room-title"),
    messages: $("messages"),
    typing: $("typing"),
    whisperBar: $("whisper-bar"),
    whisperLabel: $("whisper-label"),
    whisperCancel: $("whisper-cancel"),
    messageForm: $("message-form"),
    messageInput: $("message-input"),
    messageError: $("message-error"),
    counter: $("message-counter"),
    userList: $("user-list"),
    userCount: $("user-count"),
    people: $("people"),
    peopleButton: $("people-button"),
    renameButton: $("rename-button"),
    renameForm: $("rename-form"),
    renameInput: $("rename-input"),
    renameCancel: $("rename-cancel"),
    renameError: $("rename-error"),
    notifyButton: $("notify-button"),
    themeButton: $("theme-button"),
    logoutButton: $("logout-button"),
    attachButton: $("attach-button"),
    fileInput: $("file-input"),
    uploadStatus: $("upload-status"),
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
    whisper: null,     // {id, username}: the person the next messages go to privately
    unseen: 0,         // messages that arrived while the page was not looked at (tab title)
    notify: false,     // browser notifications wanted (and allowed)
    perRoom: {}        // id -> {messages: [entries], users: {}, typing: {id: {name, timer}}, unread}
  };

  var MAX_KEPT_MESSAGES = 500;
  var windowTitle = config.windowTitle || config.title || "";
  var sent = [];       // recently sent [content, what was typed], to put a refused one back
  var knownNames = {}; // member id -> the name the page knows them by (for rename notices)

  function roomState(roomId) {
    var key = String(roomId);
    if (!state.perRoom[key]) {
      state.perRoom[key] = { messages: [], users: {}, typing: {}, unread: 0, entered: false };
    }
    return state.perRoom[key];
  }

  function roomTitle(roomId) {
    var info = state.rooms.filter(function (r) { return String(r.id) === String(roomId); })[0];
    return info ? info.title : "";
  }

  function setStatus(text, kind) {
    ui.status.textContent = text;
    ui.status.className = "status" + (kind ? " " + kind : "");
  }

  // The browser's own locale decides the time format (12 or 24 hours); the day is a separator.
  function formatTime(ms) {
    return new Date(ms).toLocaleTimeString(undefined, { hour: "numeric", minute: "2-digit" });
  }

  function dayKey(ms) {
    var d = new Date(ms);
    return d.getFullYear() + "-" + d.getMonth() + "-" + d.getDate();
  }

  function formatDay(ms) {
    var today = new Date();
    var yesterday = new Date(today.getFullYear(), today.getMonth(), today.getDate() - 1);
    if (dayKey(ms) === dayKey(today.getTime())) {
      return t("today");
    }
    if (dayKey(ms) === dayKey(yesterday.getTime())) {
      return t("yesterday");
    }
    return new Date(ms).toLocaleDateString(undefined, {
      weekday: "long", year: "numeric", month: "long", day: "numeric"
    });
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

  function clear(node) {
    while (node.firstChild) {
      node.removeChild(node.firstChild);
    }
  }

  /*
   * Text with its http(s) links as <a> elements: the text goes in as text nodes, the link's
   * address through the DOM (only http: and https: URLs the browser parses), never as HTML.
   */
  var LINK = /\bhttps?:\/\/[^\s<>"]+/gi;

  function appendLinked(parent, text) {
    var last = 0;
    text.replace(LINK, function (match, offset) {
      var url = match.replace(/[.,;:!?)\]}'»”]+$/, "");
      var parsed = null;
      try {
        parsed = new URL(url);
      } catch (e) {
        parsed = null;
      }
      if (!parsed || (parsed.protocol !== "http:" && parsed.protocol !== "https:")) {
        return match;
      }
      parent.appendChild(document.createTextNode(text.slice(last, offset)));
      var link = el("a", null, url);
      link.href = parsed.href;
      link.target = "_blank";
      link.rel = "noopener noreferrer";
      parent.appendChild(link);
      last = offset + url.length;
      return match;
    });
    parent.appendChild(document.createTextNode(text.slice(last)));
    return parent;
  }

  function escapeRegExp(text) {
    return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  }

  function mentions(text) {
    if (!state.me || !state.me.username) {
      return false;
    }
    var pattern = new RegExp("(^|[^\\p{L}\\p{N}_])@?" + escapeRegExp(state.me.username) +
                             "(?=$|[^\\p{L}\\p{N}_])", "iu");
    return pattern.test(text);
  }

  // --- rendering ------------------------------------------------------------------------------

  function renderEntry(entry) {
    var item = el("li", "entry " + entry.kind);
    if (entry.action) {
      item.classList.add("action");
    }
    if (entry.to) {
      item.classList.add("whisper");
    }
    if (entry.mention) {
      item.classList.add("mention");
    }
    var time = el("time", "time", formatTime(entry.time));
    var when = new Date(entry.time);
    time.setAttribute("datetime", when.toISOString());
    time.title = when.toLocaleString();
    item.appendChild(time);
    var body = el("span", "body");
    if (entry.kind === "message") {
      if (entry.action) {
        body.appendChild(el("span", "from" + (entry.mine ? " mine" : ""), "* " + entry.from));
      } else {
        body.appendChild(el("span", "from" + (entry.mine ? " mine" : ""), entry.from));
      }
      if (entry.to) {
        body.appendChild(el("span", "to", entry.mine ? t("privateTo", { name: entry.to.username }) : t("privateFrom")));
      }
      if (entry.file) {
        body.appendChild(fileLink(entry.file));
      } else {
        body.appendChild(appendLinked(el("span", "content"), entry.text));
      }
      if (entry.to && !entry.mine && entry.fromId !== null) {
        var reply = el("button", "reply secondary small", t("reply"));
        reply.type = "button";
        reply.setAttribute("aria-label", t("replyTo", { name: entry.from }));
        reply.addEventListener("click", function () {
          startWhisper({ id: entry.fromId, username: entry.from });
        });
        body.appendChild(reply);
      }
    } else {
      body.appendChild(el("span", "content", entry.text));
    }
    item.appendChild(body);
    return item;
  }

  var INLINE_IMAGES = ["image/png", "image/jpeg", "image/gif", "image/webp"];

  function humanSize(size) {
    if (size < 1000) {
      return size + " B";
    }
    if (size < 1000000) {
      return Math.round(size / 1000) + " kB";
    }
    return (size / 1000000).toFixed(1) + " MB";
  }

  // A shared file: images as a thumbnail, anything else as a download link.
  function fileLink(file) {
    var href = "files/" + encodeURIComponent(file.id) + "/" + encodeURIComponent(file.name);
    var label = file.name + " (" + humanSize(Number(file.size) || 0) + ")";
    var link = el("a", "file-link content");
    link.href = href;
    link.target = "_blank";
    link.rel = "noopener noreferrer";
    if (INLINE_IMAGES.indexOf(file.type) >= 0) {
      var image = el("img", "thumb");
      image.src = href;
      image.alt = file.name;
      link.appendChild(image);
      link.appendChild(el("span", "file-name", label));
    } else {
      link.setAttribute("download", file.name);
      link.textContent = label;
    }
    return link;
  }

  function daySeparator(ms) {
    var item = el("li", "day-separator", formatDay(ms));
    item.setAttribute("data-day", dayKey(ms));
    return item;
  }

  function renderMessages() {
    var room = roomState(state.current);
    var list = ui.messages;
    clear(list);
    var fragment = document.createDocumentFragment();
    var day = null;
    room.messages.forEach(function (entry) {
      if (dayKey(entry.time) !== day) {
        day = dayKey(entry.time);
        fragment.appendChild(daySeparator(entry.time));
      }
      fragment.appendChild(renderEntry(entry));
    });
    list.appendChild(fragment);
    list.setAttribute("data-day", day || "");
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
      if (list.getAttribute("data-day") !== dayKey(entry.time)) {
        list.appendChild(daySeparator(entry.time));
        list.setAttribute("data-day", dayKey(entry.time));
      }
      list.appendChild(renderEntry(entry));
      while (list.childNodes.length > MAX_KEPT_MESSAGES + 50) {
        list.removeChild(list.firstChild);
      }
      if (atBottom || entry.mine) {
        list.scrollTop = list.scrollHeight;
      }
    } else if (entry.kind === "message") {
      room.unread += 1;
      renderRooms();
    }
    if (entry.kind === "message" && !entry.mine && !entry.history) {
      attention(roomId, entry);
    }
  }

  function renderRooms() {
    var list = ui.roomList;
    clear(list);
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
        badge.setAttribute("aria-label", t("unread", { n: unread }));
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

  function isIrc(user) {
    return !!(user.irc || user.source === "irc" || Number(user.id) < 0);
  }

  function renderUsers() {
    var room = roomState(state.current);
    var list = ui.userList;
    clear(list);
    var users = Object.keys(room.users).map(function (key) { return room.users[key]; });
    users.sort(function (a, b) {
      return String(a.username).localeCompare(String(b.username));
    });
    users.forEach(function (user) {
      var item = el("li", "user");
      var mine = state.me && String(user.id) === String(state.me.id);
      if (mine) {
        item.appendChild(el("span", "user-name", user.username));
        item.appendChild(el("span", "tag", t("you")));
      } else {
        // A click (or Enter) on a name starts a private message to that person.
        var button = el("button", "user-name", user.username);
        button.type = "button";
        button.setAttribute("aria-label", t("whisperButton", { name: user.username }));
        button.addEventListener("click", function () {
          startWhisper({ id: user.id, username: user.username });
        });
        item.appendChild(button);
      }
      if (isIrc(user)) {
        item.appendChild(el("span", "tag irc", t("irc")));
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
      ui.typing.textContent = t("typingOne", { name: names[0] });
    } else if (names.length <= 3) {
      ui.typing.textContent = t("typingSome", { names: names.join(", ") });
    } else {
      ui.typing.textContent = t("typingMany");
    }
  }

  function showRoom(roomId) {
    if (state.current !== null && String(state.current) !== String(roomId)) {
      stopTyping();
      stopWhisper();
    }
    state.current = roomId;
    var room = roomState(roomId);
    room.unread = 0;
    ui.roomTitle.textContent = roomTitle(roomId);
    renderRooms();
    renderMessages();
    renderUsers();
    renderTyping();
  }

  function setChatControls(visible) {
    Array.prototype.forEach.call(document.querySelectorAll(".chat-only"), function (node) {
      node.hidden = !visible;
    });
    if (!visible) {
      closeRename();
      setPeopleOpen(false);
    }
  }

  function showChat() {
    ui.welcome.hidden = true;
    ui.chat.hidden = false;
    setChatControls(true);
  }

  function showWelcome(errorText) {
    ui.chat.hidden = true;
    ui.welcome.hidden = false;
    setChatControls(false);
    ui.loginButton.disabled = false;
    ui.loginError.textContent = errorText || "";
    ui.nameInput.focus();
  }

  function setPeopleOpen(open) {
    ui.chat.classList.toggle("people-open", open);
    ui.peopleButton.setAttribute("aria-expanded", open ? "true" : "false");
    ui.peopleButton.textContent = open ? t("hidePeople") : t("people");
  }

  // --- attention: tab title, notifications ------------------------------------------------------

  var focused = document.hasFocus ? document.hasFocus() : true;

  function lookedAt() {
    return document.visibilityState !== "hidden" && focused;
  }

  function updateTitle() {
    document.title = (state.unseen > 0 ? "(" + state.unseen + ") " : "") + windowTitle;
  }

  function attention(roomId, entry) {
    if (lookedAt()) {
      return;
    }
    state.unseen += 1;
    updateTitle();
    if (state.notify && (entry.mention || entry.to) && window.Notification &&
        Notification.permission === "granted") {
      try {
        var title = entry.to ? t("notificationWhisper", { name: entry.from })
          : t("notificationTitle", { name: entry.from, room: roomTitle(roomId) });
        var note = new Notification(title, { body: entry.text, tag: "ilchat-" + roomId });
        note.onclick = function () {
          window.focus();
          showRoom(roomId);
        };
      } catch (e) { /* some browsers allow notifications from service workers only */ }
    }
  }

  function seen() {
    if (lookedAt() && state.unseen) {
      state.unseen = 0;
      updateTitle();
    }
  }

  document.addEventListener("visibilitychange", seen);
  window.addEventListener("focus", function () { focused = true; seen(); });
  window.addEventListener("blur", function () { focused = false; });

  function setNotify(on) {
    state.notify = on;
    ui.notifyButton.setAttribute("aria-pressed", on ? "true" : "false");
    try {
      localStorage.setItem("ilchat.notify", on ? "on" : "off");
    } catch (e) { /* ignore */ }
  }

  ui.notifyButton.addEventListener("click", function () {
    if (state.notify) {
      setNotify(false);
      return;
    }
    if (!window.Notification) {
      ui.messageError.textContent = t("notificationsBlocked");
      return;
    }
    Promise.resolve(Notification.requestPermission()).then(function (permission) {
      if (permission === "granted") {
        setNotify(true);
      } else {
        setNotify(false);
        ui.messageError.textContent = t("notificationsBlocked");
      }
    });
  });

  // --- theme ------------------------------------------------------------------------------------

  var darkQuery = window.matchMedia ? window.matchMedia("(prefers-color-scheme: dark)") : null;

  function storedTheme() {
    try {
      var theme = localStorage.getItem("ilchat.theme");
      return theme === "dark" || theme === "light" ? theme : null;
    } catch (e) {
      return null;
    }
  }

  function applyTheme() {
    var theme = storedTheme() || (darkQuery && darkQuery.matches ? "dark" : "light");
    document.documentElement.setAttribute("data-theme", theme);
    ui.themeButton.setAttribute("aria-pressed", theme === "dark" ? "true" : "false");
  }

  ui.themeButton.addEventListener("click", function () {
    var dark = document.documentElement.getAttribute("data-theme") === "dark";
    try {
      localStorage.setItem("ilchat.theme", dark ? "light" : "dark");
    } catch (e) { /* not remembered, still switched */ }
    document.documentElement.setAttribute("data-theme", dark ? "light" : "dark");
    applyTheme();
  });
  if (darkQuery && darkQuery.addEventListener) {
    darkQuery.addEventListener("change", applyTheme);
  }

  // --- server events --------------------------------------------------------------------------

  function username(d, key) {
    return d && d[key || "username"] !== undefined ? d[key || "username"] : "?";
  }

  var NOTICES = {
    connect: function (d) { return t("joined", { name: username(d) }); },
    disconnected: function (d) { return t("left", { name: username(d) }); },
    left: function () { return t("leftYou"); },
    welcome_to_chat: function (d) {
      return t("welcomeTo", { title: (d && d.title) || t("theChat"), name: username(d) });
    },
    history_has_been_cleared: function () { return t("historyCleared"); },
    user_kicked: function (d) { return t("removed", { name: username(d, "user") }); },
    kicked_from_private_room: function () { return t("youWereRemoved"); },
    message_too_long: function (d) {
      return t("tooLong", { n: "?", max: (d && d.max_length) || config.maxMessageLength });
    }
  };

  function senderName(payload) {
    return payload.from && payload.from.username !== undefined ? payload.from.username : "?";
  }

  function messageEntry(payload) {
    var text = typeof payload.content === "string" ? payload.content : String(payload.content);
    // An action is written "/me text", on the web as on IRC (the bridge makes it CTCP ACTION).
    var action = text.indexOf("/me ") === 0 && !!text.slice(4).trim();
    var mine = !!(state.me && payload.from && String(payload.from.id) === String(state.me.id));
    var to = payload.target && !payload.target.public
      ? { id: payload.target.id, username: payload.target.username } : null;
    var file = payload.format && payload.format.file;
    return {
      kind: "message",
      file: file && typeof file.id === "string" && /^[A-Za-z0-9_-]{16,64}$/.test(file.id) &&
        typeof file.name === "string" ? file : null,
      time: toMs(payload.timestamp),
      from: senderName(payload),
      fromId: payload.from && payload.from.id !== undefined ? payload.from.id : null,
      to: to,
      action: action,
      text: action ? text.slice(4) : text,
      mine: mine,
      mention: !mine && mentions(text)
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
      remember();
      ui.loginError.textContent = "";
      setStatus(t("connectedAs", { name: state.name }), "ok");
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
          document.activeElement === document.body || document.activeElement === null) {
        ui.messageInput.focus();
      }
    },

    loginFailed: function (info) {
      state.loggedIn = false;
      state.wantLogin = false;
      state.token = null;
      var text = (info && info.message) || t("nameRefused");
      if (info && info.error === "name_taken") {
        text = t("nameTaken", { name: state.name });
      }
      setStatus(t("connected"), "ok");
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
      var users = payload.users || {};
      Object.keys(users).forEach(function (key) {
        // The name a member was first seen with; only a "renamed" event changes it, so that a
        // userlist that arrives before the "renamed" event does not hide the rename.
        if (!Object.prototype.hasOwnProperty.call(knownNames, key)) {
          knownNames[key] = users[key].username;
        }
      });
      roomState(payload.roomId).users = users;
      if (String(payload.roomId) === String(state.current)) {
        renderUsers();
      }
    },

    // Someone (on the web or on IRC) has a new name: every list follows, each room says so.
    renamed: function (info) {
      if (!info || info.id === undefined) {
        return;
      }
      var key = String(info.id);
      var name = info.username;
      var mine = state.me && String(state.me.id) === key;
      var old = Object.prototype.hasOwnProperty.call(knownNames, key) ? knownNames[key] : null;
      knownNames[key] = name;
      state.rooms.forEach(function (room) {
        var rs = roomState(room.id);
        var user = rs.users[key];
        if (user && old !== null && old !== name) {
          rs.users[key] = Object.assign({}, user, { username: name });
          addEntry(room.id, { kind: "notice", time: toMs(info.timestamp), text: t("renamed", { old: old, name: name }) });
        }
        if (rs.typing[key]) {
          rs.typing[key].name = name;
        }
      });
      if (state.whisper && String(state.whisper.id) === key) {
        state.whisper.username = name;
        showWhisper();
      }
      if (mine) {
        state.me.username = name;
        state.name = name;
        remember();
        setStatus(t("connectedAs", { name: name }), "ok");
        closeRename();
      }
      if (old !== null || mine) {
        renderUsers();
        renderTyping();
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
      info = info || {};
      if (info.error === "invalid_name" || info.error === "name_taken") {
        ui.renameError.textContent = info.error === "name_taken" && info.name
          ? t("nameTaken", { name: info.name }) : (info.message || t("nameRefused"));
        return;
      }
      var text = info.message || t("serverRefused");
      if (info.error === "rate_limited" && typeof info.content === "string") {
        text = t("sentTooFast", { n: Math.max(1, Math.ceil(Number(info.retry_after) || 1)) });
      } else if (info.error === "message_too_long" && typeof info.content === "string") {
        text = t("tooLong", { n: info.content.length, max: info.max_length || config.maxMessageLength });
      }
      if (typeof info.content === "string") {
        putBack(info.content);
      }
      showError(text);
    },

    shutdown: function () {
      state.loggedIn = false;
      state.wantLogin = false;
      client.close();
      setStatus(t("sessionEnded"), "error");
      showWelcome(t("sessionEndedWelcome"));
      client.open();
    }
  };

  function remember() {
    try {
      sessionStorage.setItem("ilchat.name", state.name);
      if (state.token) {
        sessionStorage.setItem("ilchat.token", state.token);
      }
    } catch (e) { /* private mode: no reconnect after a reload, which is fine */ }
  }

  var errorTimer = null;

  function showError(text) {
    ui.messageError.textContent = text;
    clearTimeout(errorTimer);
    errorTimer = setTimeout(function () {
      ui.messageError.textContent = "";
    }, 15000);
  }

  /*
   * A refused message goes back into the box as it was typed: after the ones put back before
   * it, before what was typed since.
   */
  var putBackEnd = 0;

  function putBack(content) {
    var typed = content;
    for (var i = 0; i < sent.length; i += 1) {
      if (sent[i][0] === content) {
        typed = sent[i][1];
        sent.splice(i, 1);
        break;
      }
    }
    var now = ui.messageInput.value;
    var at = Math.min(putBackEnd, now.length);
    var before = now.slice(0, at);
    var after = now.slice(at);
    var insert = (before && before.slice(-1) !== "\n" ? "\n" : "") + typed;
    ui.messageInput.value = before + insert + (after && after.charAt(0) !== "\n" ? "\n" : "") + after;
    putBackEnd = before.length + insert.length;
    inputChanged();
  }

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
      setStatus(t("loggingIn"));
      client.emit("login", state.name, state.token);
    }
  }

  var client = new SocketIOClient(socketUrl(), config.namespace, {
    connect: function () {
      if (state.wantLogin) {
        login();
      } else {
        setStatus(t("connected"), "ok");
      }
    },
    disconnect: function () {
      state.loggedIn = false;
      setStatus(t("connectionLost"), "error");
    },
    connectError: function (message) {
      setStatus(t("refusedConnection", { message: message }), "error");
    },
    reconnecting: function (delay) {
      setStatus(t("notConnectedRetry", { n: Math.ceil(delay / 1000) }), "error");
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

  // --- whispers -----------------------------------------------------------------------------------

  function showWhisper() {
    ui.whisperBar.hidden = !state.whisper;
    ui.whisperLabel.textContent = state.whisper ? t("whisperTo", { name: state.whisper.username }) : "";
  }

  function startWhisper(user) {
    state.whisper = { id: user.id, username: user.username };
    showWhisper();
    setPeopleOpen(false);
    ui.messageInput.focus();
  }

  function stopWhisper() {
    state.whisper = null;
    showWhisper();
  }

  ui.whisperCancel.addEventListener("click", function () {
    stopWhisper();
    ui.messageInput.focus();
  });

  function findUser(name) {
    var room = roomState(state.current);
    var wanted = name.toLowerCase();
    var found = null;
    Object.keys(room.users).forEach(function (key) {
      if (String(room.users[key].username).toLowerCase() === wanted) {
        found = room.users[key];
      }
    });
    return found;
  }

  // --- typing, sending, logging in ---------------------------------------------------------------

  var typing = { room: null, idleTimer: null };

  function stopTyping() {
    clearTimeout(typing.idleTimer);
    if (typing.room !== null) {
      client.emit("userStoppedTyping", typing.room);
      typing.room = null;
    }
  }

  // The limit is shown as it comes near (from 80 %), and past it the counter says so.
  function inputChanged() {
    var box = ui.messageInput;
    box.style.height = "auto";
    box.style.height = Math.min(box.scrollHeight + 2, 160) + "px";
    var max = config.maxMessageLength;
    var n = box.value.length;
    if (max && n >= max * 0.8) {
      ui.counter.textContent = t("counter", { n: n, max: max });
      ui.counter.className = "counter " + (n > max ? "over" : "near");
    } else {
      ui.counter.textContent = "";
      ui.counter.className = "counter";
    }
  }

  ui.messageInput.addEventListener("input", function () {
    inputChanged();
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

  ui.messageInput.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      if (ui.messageForm.requestSubmit) {
        ui.messageForm.requestSubmit();
      } else {
        ui.messageForm.dispatchEvent(new Event("submit", { cancelable: true }));
      }
    } else if (event.key === "Escape" && state.whisper) {
      stopWhisper();
    }
  });

  /*
   * What the box holds as [content, format, target], or null after handling a command here.
   * /me text: an action; /nick name: a new name; /msg name text: a whisper; //text: "/text".
   */
  function parseInput(text) {
    var target = state.whisper ? { id: state.whisper.id, username: state.whisper.username, public: 0 } : null;
    if (text.charAt(0) !== "/" || text.indexOf("//") === 0) {
      return [text.indexOf("//") === 0 ? text.slice(1) : text, {}, target];
    }
    var match = /^\/(\S+)\s*([\s\S]*)$/.exec(text);
    var command = match[1].toLowerCase();
    var rest = match[2];
    if (command === "me" && rest.trim()) {
      return ["/me " + rest, {}, target];
    }
    if (command === "nick" && rest.trim()) {
      rename(rest.trim());
      return null;
    }
    if (command === "msg" || command === "query") {
      var parts = /^(\S+)\s+([\s\S]+)$/.exec(rest);
      if (!parts) {
        showError(t("msgUsage"));
        return false;
      }
      var user = findUser(parts[1]);
      if (!user) {
        showError(t("noSuchPerson", { name: parts[1] }));
        return false;
      }
      startWhisper(user);
      return [parts[2], {}, { id: user.id, username: user.username, public: 0 }];
    }
    showError(t("unknownCommand", { command: "/" + match[1] }));
    return false;
  }

  ui.messageForm.addEventListener("submit", function (event) {
    event.preventDefault();
    var text = ui.messageInput.value;
    if (!text.trim()) {
      return;
    }
    var max = config.maxMessageLength;
    if (max && text.length > max) {
      showError(t("tooLong", { n: text.length, max: max }));
      return;
    }
    var parsed = parseInput(text);
    if (parsed === false) {
      return;
    }
    if (parsed !== null) {
      var args = { content: parsed[0], format: parsed[1] };
      if (parsed[2]) {
        args.target = parsed[2];
      }
      if (!state.loggedIn || !client.emit("message", args, state.current)) {
        showError(t("notSent"));
        return;
      }
      sent.push([parsed[0], text]);
      if (sent.length > 50) {
        sent.shift();
      }
    }
    stopTyping();
    ui.messageError.textContent = "";
    ui.messageInput.value = "";
    putBackEnd = 0;
    inputChanged();
    ui.messageInput.focus();
  });

  function nameProblem(name) {
    if (!name) {
      return t("enterName");
    }
    if (config.maxNameLength && name.length > config.maxNameLength) {
      return t("nameTooLong", { max: config.maxNameLength, n: name.length });
    }
    return null;
  }

  ui.nameInput.addEventListener("input", function () {
    var name = ui.nameInput.value.trim();
    ui.loginError.textContent = name ? nameProblem(name) || "" : "";
  });

  ui.loginForm.addEventListener("submit", function (event) {
    event.preventDefault();
    var name = ui.nameInput.value.trim();
    var problem = nameProblem(name);
    if (problem) {
      ui.loginError.textContent = problem;
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
      ui.loginError.textContent = t("notConnectedYet");
    }
  });

  // --- renaming -----------------------------------------------------------------------------------

  function rename(name) {
    var problem = nameProblem(name);
    openRename(name);
    if (problem) {
      ui.renameError.textContent = problem;
      return;
    }
    ui.renameError.textContent = "";
    client.emit("rename", name);
  }

  function openRename(value) {
    ui.renameForm.hidden = false;
    ui.renameButton.setAttribute("aria-expanded", "true");
    ui.renameInput.value = value !== undefined ? value : (state.me ? state.me.username : "");
    ui.renameInput.focus();
    ui.renameInput.select();
  }

  function closeRename() {
    if (!ui.renameForm.hidden) {
      ui.renameForm.hidden = true;
      ui.renameError.textContent = "";
      ui.renameButton.setAttribute("aria-expanded", "false");
      if (state.loggedIn) {
        ui.messageInput.focus();
      }
    }
  }

  ui.renameButton.addEventListener("click", function () {
    if (ui.renameForm.hidden) {
      openRename();
    } else {
      closeRename();
    }
  });
  ui.renameCancel.addEventListener("click", closeRename);
  ui.renameInput.addEventListener("keydown", function (event) {
    if (event.key === "Escape") {
      closeRename();
    }
  });
  ui.renameForm.addEventListener("submit", function (event) {
    event.preventDefault();
    var name = ui.renameInput.value.trim();
    if (state.me && name === state.me.username) {
      closeRename();
      return;
    }
    rename(name);
  });

  ui.peopleButton.addEventListener("click", function () {
    var open = !ui.chat.classList.contains("people-open");
    setPeopleOpen(open);
    if (open) {
      var first = ui.userList.querySelector("button") || ui.people;
      first.focus();
    }
  });
  ui.people.addEventListener("keydown", function (event) {
    if (event.key === "Escape" && ui.chat.classList.contains("people-open")) {
      setPeopleOpen(false);
      ui.peopleButton.focus();
    }
  });

  // --- sharing files -----------------------------------------------------------------------------

  function upload(file) {
    var files = config.files;
    var type = String(file.type || "").toLowerCase();
    var name = file.name || "file";
    if (!state.loggedIn || !state.token) {
      showError(t("notSent"));
      return;
    }
    if (file.size > files.maxBytes) {
      showError(t("fileTooLarge", { name: name, size: humanSize(file.size), max: humanSize(files.maxBytes) }));
      return;
    }
    if (files.types.indexOf(type) < 0) {
      showError(t("fileTypeRefused", { type: type || "?" }));
      return;
    }
    ui.uploadStatus.textContent = t("uploading", { name: name });
    fetch("files/?room=" + encodeURIComponent(state.current), {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": type, "X-Filename": encodeURIComponent(name), "X-Ilchat-Token": state.token },
      body: file
    }).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (body) {
        ui.uploadStatus.textContent = "";
        if (!response.ok) {
          showError(body.message || t("uploadFailed"));
        }
      });
    }).catch(function () {
      ui.uploadStatus.textContent = "";
      showError(t("uploadFailed"));
    });
  }

  ui.attachButton.addEventListener("click", function () {
    ui.fileInput.click();
  });
  ui.fileInput.addEventListener("change", function () {
    Array.prototype.forEach.call(ui.fileInput.files, upload);
    ui.fileInput.value = "";
  });
  ui.messageInput.addEventListener("paste", function (event) {
    var data = event.clipboardData;
    if (config.files && data && data.files && data.files.length) {
      event.preventDefault();
      Array.prototype.forEach.call(data.files, upload);
    }
  });

  // --- leaving --------------------------------------------------------------------------------------

  /*
   * Leaving on purpose tells the server first ("leave"), so that the others see us go at once;
   * only a lost connection keeps our name for the server's grace. A page being closed (or
   * navigated away from) leaves the same way; a reload then joins again under the same name.
   */
  function leave() {
    if (state.loggedIn) {
      client.emit("leave");
    }
    stopTyping();
    state.wantLogin = false;
    state.loggedIn = false;
  }

  ui.logoutButton.addEventListener("click", function () {
    leave();
    state.me = null;
    state.current = null;
    state.perRoom = {};
    stopWhisper();
    try {
      sessionStorage.removeItem("ilchat.token");
    } catch (e) { /* ignore */ }
    state.token = null;
    client.close();
    showWelcome("");
    client.open();
  });

  window.addEventListener("pagehide", function () {
    var wasIn = state.loggedIn;
    leave();
    if (wasIn) {
      // Back from the back/forward cache, log in again under the same name.
      state.wantLogin = true;
      state.token = null;
    }
    client.close();
  });

  window.addEventListener("pageshow", function (event) {
    if (event.persisted) {
      client.open();
    }
  });

  // --- start ------------------------------------------------------------------------------------

  translatePage();
  applyTheme();
  document.title = windowTitle;
  ui.appTitle.textContent = config.title;
  ui.welcomeText.textContent = config.welcome;
  appendLinked(ui.infoText, config.info || "");
  ui.infoText.hidden = !config.info;
  if (!config.files) {
    ui.attachButton.remove();
  }
  state.rooms = Array.isArray(config.rooms) ? config.rooms : [];
  try {
    state.notify = localStorage.getItem("ilchat.notify") === "on" && !!window.Notification &&
      Notification.permission === "granted";
  } catch (e) { /* ignore */ }
  ui.notifyButton.setAttribute("aria-pressed", state.notify ? "true" : "false");
  if (!window.Notification) {
    ui.notifyButton.classList.remove("chat-only");
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
    language: language,
    isConnected: function () { return client.connected; }
  };
})();
