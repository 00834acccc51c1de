// modelyard dashboard: one live connection per page (server-sent events), dropped while the tab
// is hidden and resumed after the last event seen. No library, no inline script (the CSP forbids
// it). Events re-render the page's main part when they concern it; rates update numbers in place.
"use strict";
(function () {
  const body = document.body;
  const base = body.dataset.live;
  const indicator = document.getElementById("live-state");
  if (!base) return;
  let lastId = body.dataset.after || null;
  let source = null;
  let refreshTimer = null;
  let refreshing = false;
  let again = false;

  function show(state) {
    if (indicator) {
      indicator.textContent = state;
      indicator.dataset.state = state;
    }
  }

  function connect() {
    if (source) source.close();
    const url = lastId === null ? base : base + "&after=" + encodeURIComponent(lastId);
    source = new EventSource(url);
    source.onopen = function () { show("live"); };
    source.onerror = function () {
      if (source.readyState !== EventSource.CLOSED) {
        show("reconnecting");  // the browser retries by itself, sending Last-Event-ID
        return;
      }
      // Refused (the session ended, or the control plane restarted and forgot it): the page
      // again says which (a redirect to sign-in), then the stream resumes after the last event.
      show("offline");
      schedule();
      setTimeout(connect, 2000);
    };
    source.addEventListener("change", onChange);
    source.addEventListener("rates", onRates);
    source.addEventListener("signedout", function () {
      source.close();
      location.assign("/ui/signin");
    });
  }

  function onChange(message) {
    if (message.lastEventId) lastId = message.lastEventId;
    const event = JSON.parse(message.data);
    const feed = document.querySelector("[data-feed]");
    if (feed) prepend(feed, event);
    const scope = document.querySelector("[data-refresh-subject]");
    if (scope && String(event.subject).startsWith(scope.dataset.refreshSubject)) schedule();
  }

  function matches(type, patterns) {
    if (!patterns) return true;
    return patterns.split(",").some(function (p) {
      p = p.trim();
      return !p || p === "*" || p === type || (p.endsWith(".*") && type.startsWith(p.slice(0, -1)));
    });
  }

  function prepend(feed, event) {
    if (!matches(event.type, feed.dataset.feed)) return;
    const list = feed.querySelector("#events");
    const item = document.createElement("li");
    item.dataset.type = event.type;
    const time = document.createElement("time");
    time.textContent = String(event.created_at).replace("T", " ").slice(0, 19);
    const type = document.createElement("b");
    type.textContent = event.type;
    const subject = document.createElement("span");
    subject.textContent = event.subject;
    item.append(time, " ", type, " ", subject);
    list.prepend(item);
    while (list.children.length > 200) list.lastElementChild.remove();
  }

  function onRates(message) {
    const rates = JSON.parse(message.data);
    let changed = false;
    document.querySelectorAll("[data-live-value]").forEach(function (el) {
      const value = rates[el.dataset.liveValue];
      if (value !== undefined && el.textContent !== value) {
        el.textContent = value;
        changed = true;
      }
    });
    if (changed && document.querySelector("[data-charts-follow]")) followCharts();
  }

  // Charts drawn from the gateway's reports follow the rates they share: the page again when
  // they change, at most every CHARTS_MS (the numbers above them change at once).
  const CHARTS_MS = 2000;
  let chartsAt = 0;
  let chartsTimer = null;
  function followCharts() {
    if (chartsTimer !== null) return;
    chartsTimer = setTimeout(function () {
      chartsTimer = null;
      chartsAt = Date.now();
      schedule();
    }, Math.max(0, chartsAt + CHARTS_MS - Date.now()));
  }

  function schedule() {
    if (refreshTimer === null) refreshTimer = setTimeout(refresh, 100);
  }

  // The page again, its <main> swapped in: one request per burst of events, never a poll.
  async function refresh() {
    refreshTimer = null;
    if (refreshing) { again = true; return; }
    refreshing = true;
    try {
      const response = await fetch(location.href, { credentials: "same-origin" });
      if (response.redirected && response.url.includes("/ui/signin")) {
        location.assign(response.url);
        return;
      }
      const page = new DOMParser().parseFromString(await response.text(), "text/html");
      const fresh = page.getElementById("main");
      const main = document.getElementById("main");
      // The log panel is live by itself: it stays, with its lines, in the fresh page.
      const panel = document.getElementById("log-panel");
      const slot = fresh && fresh.querySelector("#log-panel");
      if (panel && slot) slot.replaceWith(panel);
      if (fresh && main) main.replaceChildren(...fresh.childNodes);
    } catch (error) {
      show("reconnecting");
    } finally {
      refreshing = false;
      if (again) { again = false; schedule(); }
    }
  }

  document.addEventListener("visibilitychange", function () {
    if (document.hidden) {
      if (source) source.close();
      source = null;
      show("paused");
    } else {
      connect();
      schedule();  // what changed while hidden and is not an event (rates) shows at once
    }
  });
  connect();
})();

// The deployment page's log panel: its replicas' lines, live, on a stream of their own (events
// "log", id = the line's time). Lines are set as text, never as markup; the last 1000 are kept.
(function () {
  const panel = document.getElementById("log-panel");
  if (!panel || !panel.dataset.logs) return;
  const base = panel.dataset.logs;
  const KEEP = 1000;
  let source = null;
  let lastTime = null;
  let pending = [];
  let drawing = false;

  // Lines are added once a frame, all that came since: a burst (a replica logging a traceback per
  // failed request) costs one layout per frame, not one per line.
  function draw() {
    drawing = false;
    const atBottom = panel.scrollHeight - panel.scrollTop - panel.clientHeight < 8;
    panel.append(...pending);
    pending = [];
    let extra = panel.children.length - KEEP;
    while (extra-- > 0) panel.firstElementChild.remove();
    if (atBottom) panel.scrollTop = panel.scrollHeight;
  }

  function connect() {
    if (source) source.close();
    const url = lastTime === null ? base : base + "&after=" + encodeURIComponent(lastTime);
    source = new EventSource(url);
    source.addEventListener("log", function (message) {
      const line = JSON.parse(message.data);
      lastTime = line.time;
      const row = document.createElement("div");
      row.className = "log-line";
      const time = document.createElement("time");
      time.dateTime = line.time;
      time.textContent = line.time.slice(11, 23);
      const replica = document.createElement("span");
      replica.className = "replica";
      replica.textContent = line.replica;
      const text = document.createElement("span");
      text.className = "text";
      text.textContent = line.text;
      row.append(time, " ", replica, " ", text);
      pending.push(row);
      if (pending.length > KEEP) pending.shift();
      if (!drawing) {
        drawing = true;
        requestAnimationFrame(draw);
      }
    });
    source.addEventListener("signedout", function () { source.close(); });
    source.onerror = function () {
      if (source.readyState === EventSource.CLOSED) setTimeout(connect, 2000);
    };
  }

  document.addEventListener("visibilitychange", function () {
    if (document.hidden) {
      if (source) source.close();
      source = null;
    } else if (source === null) {
      connect();
    }
  });
  connect();
})();
