// The fleet dashboard's page. It keeps its own copy of the fleet, fed by the server's events
// (the whole model once, then batches of changes), and redraws only what changed, once per
// animation frame. Every value from the broker is set as text (textContent or text nodes),
// never parsed as HTML; the Content-Security-Policy forbids inline script besides.
//
// The same page is served by `fleetctl dashboard` (straight from the broker) and by
// fleet-server (from its inventory). fleet-server's first event carries a session: who is
// logged in, the role, the session's CSRF token and whether rollouts are served. Then the
// page also links cars (/cars/<VIN>), shows labels, the car's audited history and the
// rollouts view, and offers operators their actions: each one a request to fleet-server's
// API (/api/v1/...) with the session cookie and the CSRF token, so the API's roles and
// audit apply. Viewers get no action controls at all.
"use strict";

(function () {
  const STATES = ["failed", "pending", "stopping", "running", "succeeded", "not_scheduled", "removed"];
  const OUTCOMES_KEPT = 100;
  const LOG_LINES_KEPT = 5000;

  const $ = (id) => document.getElementById(id);
  const carsBody = $("car-rows");
  const workloadsBody = $("workloads").tBodies[0];
  const agentsBody = $("agents").tBodies[0];
  const filterVin = $("filter-vin");
  const filterState = $("filter-state");

  const cars = new Map(); // vin -> car
  let outcomes = [];
  let selected = null; // vin shown in the car panel
  let session = null; // fleet-server's session (null: fleetctl dashboard, straight from the broker)
  let view = "fleet"; // or "rollouts" (fleet-server only)
  let applied = 0; // changes applied since the page loaded (the bench and tests read it)

  const dirty = new Set(); // cars whose row needs drawing
  let orderDirty = true;
  let summaryDirty = true;
  let detailDirty = false;
  let outcomesDirty = false;
  let frame = 0;

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function stateClass(state) {
    return "state state-" + (STATES.includes(state) ? state : "other");
  }

  function presenceOf(car) {
    if (!car.presence) return "never";
    const status = car.presence.status;
    return status === "online" || status === "offline" ? status : "other";
  }

  // "2026-12-02T01:56:57.295+00:00" -> "2026-12-02 01:56:57" (the columns say UTC);
  // other text as it is.
  function shortTime(value) {
    const m = /^(\d{4}-\d\d-\d\d)T(\d\d:\d\d:\d\d)(?:\.\d+)?(?:\+00:00|Z)$/.exec(value || "");
    return m ? m[1] + " " + m[2] : value || "";
  }

  // One collator for every comparison: localeCompare with options builds one per call,
  // which makes sorting a thousand cars take a frame of its own.
  const collator = new Intl.Collator(undefined, { numeric: true });
  const compareVins = collator.compare;

  // -- the model --------------------------------------------------------------------------

  function carOf(vin) {
    let car = cars.get(vin);
    if (!car) {
      car = {
        vin, presence: null, workloads: new Map(), agents: new Map(), labels: {}, row: null, failed: false,
      };
      cars.set(vin, car);
      orderDirty = true;
    }
    return car;
  }

  function touch(car) {
    dirty.add(car);
    summaryDirty = true;
    if (car.vin === selected) detailDirty = true;
  }

  function applySnapshot(snapshot) {
    cars.clear();
    carsBody.replaceChildren();
    for (const item of snapshot.cars) setWhole(item);
    outcomes = snapshot.outcomes.slice(0, OUTCOMES_KEPT);
    outcomesDirty = true;
    orderDirty = true;
    detailDirty = true;
    applied += 1;
  }

  // A car as a whole (fleet-server sends each changed car so).
  function setWhole(item) {
    const car = carOf(item.vin);
    car.presence = item.presence;
    car.workloads = new Map(Object.entries(item.workloads));
    car.agents = new Map(Object.entries(item.agents));
    car.labels = item.labels || {};
    touch(car);
  }

  function applyChange(change) {
    applied += 1;
    if (change.t === "whole") {
      setWhole(change.car);
      return;
    }
    if (change.t === "outcome") {
      outcomes.unshift(change.outcome);
      if (outcomes.length > OUTCOMES_KEPT) outcomes.length = OUTCOMES_KEPT;
      outcomesDirty = true;
      if (session && change.outcome.vin === selected) loadHistory();
      return;
    }
    const car = carOf(change.vin);
    if (change.t === "car") {
      car.presence = change.presence;
    } else if (change.t === "wl" || change.t === "agent") {
      const table = change.t === "wl" ? car.workloads : car.agents;
      if (change.value === null) table.delete(change.name);
      else table.set(change.name, change.value);
    }
    touch(car);
  }

  // -- drawing ----------------------------------------------------------------------------

  // Only an online car's workload states are live; another car's are what it said last.
  const LAST_KNOWN = "last known";

  function live(car) {
    return presenceOf(car) === "online";
  }

  function workloadCounts(car) {
    const counts = {};
    if (!live(car)) {
      if (car.workloads.size) counts[LAST_KNOWN] = car.workloads.size;
      return counts;
    }
    for (const wl of car.workloads.values()) counts[wl.state] = (counts[wl.state] || 0) + 1;
    return counts;
  }

  function lastKnownNote(car) {
    const presence = car.presence || {};
    if (!car.presence) return "car never seen";
    return "car " + presence.status + " since " + (presence.since || "an unknown time");
  }

  function countsNode(counts) {
    const cell = document.createDocumentFragment();
    const known = STATES.filter((s) => counts[s]);
    const other = Object.keys(counts).filter((s) => !STATES.includes(s)).sort();
    for (const state of known.concat(other)) {
      cell.append(el("span", stateClass(state), counts[state] + " " + state), " ");
    }
    return cell;
  }

  function drawRow(car) {
    if (!car.row) {
      car.row = el("div", "row");
      car.row.setAttribute("role", "row");
      car.row.dataset.vin = car.vin;
      for (let i = 0; i < 6; i++) car.row.append(el("span"));
      car.row.children[0].textContent = car.vin;
    }
    const presence = car.presence || {};
    const kind = presenceOf(car);
    const cells = car.row.children;
    cells[1].replaceChildren(el("span", "presence presence-" + kind, kind === "never" ? "never seen" : presence.status));
    cells[2].textContent = presence.ankaios || "";
    cells[3].textContent = shortTime(presence.since);
    cells[3].title = presence.since || ""; // the column may cut it; the tooltip has it whole
    cells[4].textContent = presence.connector_version || "";
    cells[4].title = presence.connector_version || "";
    const counts = workloadCounts(car);
    cells[5].replaceChildren(countsNode(counts));
    const failed = Boolean(counts.failed);
    if (failed !== car.failed) {
      car.failed = failed;
      orderDirty = true;
    }
    car.row.classList.toggle("has-failed", failed);
    car.row.classList.toggle("selected", car.vin === selected);
    car.row.dataset.presence = kind;
  }

  function matches(car, vinText, state) {
    if (vinText && !car.vin.toLowerCase().includes(vinText)) return false;
    if (!state) return true;
    if (state.startsWith("p:")) return presenceOf(car) === state.slice(2);
    const wanted = state.slice(2);
    if (!live(car)) return false; // its states are last known, not current
    for (const wl of car.workloads.values()) if (wl.state === wanted) return true;
    return false;
  }

  function drawOrder() {
    const vinText = filterVin.value.trim().toLowerCase();
    const state = filterState.value;
    const shown = [];
    for (const car of cars.values()) if (matches(car, vinText, state)) shown.push(car);
    // Cars with a failed workload first, then by VIN.
    shown.sort((a, b) => (b.failed - a.failed) || compareVins(a.vin, b.vin));
    const rows = carsBody.children;
    let same = rows.length === shown.length;
    for (let i = 0; same && i < shown.length; i++) same = rows[i] === shown[i].row;
    if (!same) carsBody.replaceChildren(...shown.map((car) => car.row));
    $("shown").textContent = shown.length + " of " + cars.size + " cars";
  }

  function drawSummary() {
    const presence = { online: 0, offline: 0, never: 0, other: 0 };
    const states = {};
    for (const car of cars.values()) {
      presence[presenceOf(car)] += 1;
      for (const [state, n] of Object.entries(workloadCounts(car))) {
        states[state] = (states[state] || 0) + n;
      }
    }
    $("count-online").textContent = presence.online;
    $("count-offline").textContent = presence.offline;
    $("count-never").textContent = presence.never;
    const byState = $("by-state");
    byState.replaceChildren(countsNode(states));
    if (!byState.childNodes.length) byState.textContent = "none";
  }

  function cell(row, text, className) {
    const td = el("td", className, text);
    row.append(td);
    return td;
  }

  function drawDetail() {
    const car = selected === null ? null : cars.get(selected);
    $("car-panel").hidden = !car;
    if (!car) return;
    $("car-vin").textContent = car.vin;
    const names = Array.from(car.workloads.keys());
    names.sort((a, b) => {
      const fa = car.workloads.get(a).state === "failed";
      const fb = car.workloads.get(b).state === "failed";
      return (fb - fa) || compareVins(a, b);
    });
    const rows = names.map((name) => {
      const wl = car.workloads.get(name);
      const row = el("tr");
      row.dataset.workload = name;
      cell(row, name);
      cell(row, wl.agent);
      if (live(car)) {
        cell(row, "").append(el("span", stateClass(wl.state), wl.state));
        cell(row, wl.substate);
        cell(row, wl.info, "info");
      } else {
        const note = lastKnownNote(car);
        const state = el("span", "state state-last-known", wl.state + " (" + LAST_KNOWN + ")");
        state.title = note;
        cell(row, "").append(state);
        cell(row, wl.substate);
        cell(row, wl.info ? note + "; " + wl.info : note, "info");
      }
      cell(row, shortTime(wl.since), "since").title = wl.since;
      const actions = cell(row, "");
      if (canReadLogs()) {
        const button = el("button", "logs", "Logs");
        button.type = "button";
        button.addEventListener("click", () => openLogs(car.vin, name));
        actions.append(button);
      }
      return row;
    });
    workloadsBody.replaceChildren(...rows);
    $("no-workloads").hidden = rows.length > 0;
    const agents = Array.from(car.agents.keys()).sort().map((name) => {
      const agent = car.agents.get(name);
      const row = el("tr");
      row.dataset.agent = name;
      cell(row, name);
      const connected = agent.connected === "true";
      cell(row, "").append(el("span", "presence presence-" + (connected ? "online" : "offline"),
        connected ? "connected" : "disconnected"));
      cell(row, agentLoad(agent));
      cell(row, agentTags(agent.tags));
      cell(row, shortTime(agent.since), "since").title = agent.since || "";
      return row;
    });
    agentsBody.replaceChildren(...agents);
    drawLabels(car);
    if (session) {
      const link = $("car-link");
      link.href = carPath(car.vin);
      link.hidden = false;
    }
  }

  function drawLabels(car) {
    const box = $("car-labels");
    const entries = Object.entries(car.labels || {}).sort((a, b) => compareVins(a[0], b[0]));
    box.replaceChildren(...entries.map(([key, value]) => el("span", "label-chip", key + "=" + value)));
    box.hidden = entries.length === 0;
  }

  function agentLoad(agent) {
    const parts = [];
    const cpu = Number(agent.cpu_usage);
    if (agent.cpu_usage && Number.isFinite(cpu)) parts.push("CPU " + cpu + " %");
    const free = Number(agent.free_memory);
    if (agent.free_memory && Number.isFinite(free)) {
      parts.push((free / 2 ** 30).toFixed(1) + " GiB free");
    }
    return parts.join(", ");
  }

  function agentTags(tags) {
    // The tags arrive as JSON text; shown as "key=value" pairs, or as they are.
    try {
      const parsed = JSON.parse(tags || "{}");
      if (parsed && typeof parsed === "object" && !Array.isArray(parsed)) {
        return Object.entries(parsed).map(([k, v]) => k + "=" + String(v)).join(", ");
      }
    } catch (error) {
      // not JSON: shown as it came
    }
    return tags || "";
  }

  function drawOutcomes() {
    const items = outcomes.map((o) => {
      const item = el("li", o.ok === "yes" ? "outcome ok" : "outcome failed");
      item.append(
        el("span", "at", shortTime(o.at)), " ",
        el("span", "vin", o.vin), " ",
        el("span", "operation", o.operation),
        o.request_id ? el("span", "request-id", " " + o.request_id) : "",
        ": ",
        el("span", "summary", o.summary),
      );
      return item;
    });
    $("outcomes").replaceChildren(...items);
  }

  function draw() {
    frame = 0;
    drawView();
    for (const car of dirty) drawRow(car);
    dirty.clear();
    if (orderDirty || filterState.value) drawOrder();
    orderDirty = false;
    if (summaryDirty) drawSummary();
    summaryDirty = false;
    if (detailDirty) drawDetail();
    detailDirty = false;
    if (outcomesDirty) drawOutcomes();
    outcomesDirty = false;
    document.body.dataset.applied = String(applied);
    document.body.dataset.cars = String(cars.size);
  }

  function schedule() {
    if (!frame) frame = requestAnimationFrame(draw);
  }

  // -- the live feed ----------------------------------------------------------------------

  function setLink(state, text) {
    document.body.dataset.link = state;
    $("link").textContent = text;
  }

  function setBroker(connected) {
    if (connected) setLink("live", "live");
    else setLink("broker", "the dashboard lost the broker: what you see may be out of date");
  }

  const feed = new EventSource("/events");
  feed.onmessage = (event) => {
    const message = JSON.parse(event.data);
    if (message.t === "snapshot") {
      if (message.session) applySession(message.session);
      applySnapshot(message);
      setBroker(message.broker);
    } else {
      for (const change of message.changes) {
        if (change.t === "broker") setBroker(change.connected);
        else applyChange(change);
      }
    }
    schedule();
  };
  feed.onerror = () => {
    setLink("reconnecting", "reconnecting…");
    if (session) checkLoggedIn();
  };

  function select(vin) {
    const previous = selected === null ? null : cars.get(selected);
    selected = vin;
    if (previous) dirty.add(previous);
    const car = vin === null ? null : cars.get(vin);
    if (car) dirty.add(car);
    detailDirty = true;
    resetActions();
    if (session) loadHistory();
    schedule();
  }

  carsBody.addEventListener("click", (event) => {
    const row = event.target.closest(".row");
    if (!row || !row.dataset.vin) return;
    if (session) history.pushState(null, "", carPath(row.dataset.vin));
    select(row.dataset.vin);
  });
  for (const input of [filterVin, filterState]) {
    for (const type of ["input", "change"]) {
      input.addEventListener(type, () => {
        orderDirty = true;
        schedule();
      });
    }
  }

  // -- log tails --------------------------------------------------------------------------

  let logSource = null;
  let logTarget = null;

  function stopLogs() {
    if (logSource) logSource.close();
    logSource = null;
  }

  // fleet-server: POST /api/v1/cars/<VIN>/logs answers the car's batches as NDJSON.
  function streamLogs(target, tail, follow, show) {
    const controller = new AbortController();
    logSource = { close: () => controller.abort() };
    const body = { workloads: [target.workload], tail };
    if (follow) body.follow = 600;
    api("POST", "/api/v1/cars/" + encodeURIComponent(target.vin) + "/logs", JSON.stringify(body),
      "application/json", controller.signal)
      .then(async (response) => {
        if (!response.ok) {
          show({ error: await errorText(response) });
          return;
        }
        const reader = response.body.getReader();
        const decoder = new TextDecoder();
        let buffered = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffered += decoder.decode(value, { stream: true });
          let newline;
          while ((newline = buffered.indexOf("\n")) >= 0) {
            const line = buffered.slice(0, newline);
            buffered = buffered.slice(newline + 1);
            if (line.trim()) show(logEvent(JSON.parse(line)));
          }
        }
      })
      .catch((error) => {
        if (error.name !== "AbortError") show({ error: String(error) });
      });
  }

  // A batch as the car sent it, in the shape fleetctl dashboard's /logs events have.
  function logEvent(batch) {
    if (!batch || typeof batch !== "object") return { error: "not a JSON object" };
    if (batch.error) {
      const e = batch.error;
      return { error: typeof e === "object" ? String(e.code) + ": " + String(e.message) : String(e) };
    }
    const event = {};
    if (batch.dropped) event.dropped = String(batch.dropped);
    if (Array.isArray(batch.lines)) {
      event.lines = batch.lines.filter((l) => l && typeof l === "object")
        .map((l) => ({ line: typeof l.line === "string" ? l.line : JSON.stringify(l.line) }));
    }
    if ("end" in batch) event.end = String(batch.end);
    return event;
  }

  function openLogs(vin, workload) {
    logTarget = { vin, workload };
    startLogs();
  }

  function startLogs() {
    stopLogs();
    if (!logTarget) return;
    const lines = $("log-lines");
    const status = $("log-status");
    lines.replaceChildren();
    $("log-panel").hidden = false;
    $("log-title").textContent = logTarget.workload + " on " + logTarget.vin;
    const follow = $("log-follow").checked;
    const tail = Math.max(1, Math.min(10000, parseInt($("log-tail").value, 10) || 100));
    status.textContent = "asking the car…";
    document.body.dataset.logs = "waiting";
    const query = new URLSearchParams({
      vin: logTarget.vin, workload: logTarget.workload, tail: String(tail), follow: follow ? "1" : "0",
    });
    if (session) {
      streamLogs(logTarget, tail, follow, showLogEvent);
      return;
    }
    const source = new EventSource("/logs?" + query.toString());
    logSource = source;
    source.onmessage = (event) => showLogEvent(JSON.parse(event.data));
    function showLogEvent(message) {
      if (message.dropped) lines.append("[" + message.dropped + " lines dropped by the car]\n");
      if (message.lines) {
        for (const line of message.lines) lines.append(line.line + "\n");
        while (lines.childNodes.length > LOG_LINES_KEPT) lines.firstChild.remove();
        lines.scrollTop = lines.scrollHeight;
        status.textContent = follow ? "following…" : "receiving…";
      }
      if (message.error) {
        status.textContent = "error: " + message.error;
        document.body.dataset.logs = "error";
        stopLogs();
      } else if (message.end) {
        status.textContent = "ended (" + message.end + ")";
        document.body.dataset.logs = "ended";
        stopLogs();
      }
    }
    source.onerror = () => {
      if (source.readyState !== EventSource.CLOSED) {
        status.textContent = "the dashboard closed the tail";
        document.body.dataset.logs = "error";
      }
      source.close();
    };
  }

  $("log-follow").addEventListener("change", startLogs);
  $("log-close").addEventListener("click", () => {
    stopLogs();
    logTarget = null;
    $("log-panel").hidden = true;
  });

  // -- fleet-server: session, routes, actions, history, rollouts ----------------------------

  function canReadLogs() {
    // fleet-server's logs are a request to the car: operators only (the API says so too).
    return !session || session.operator;
  }

  function carPath(vin) {
    return "/cars/" + encodeURIComponent(vin);
  }

  function api(method, path, body, contentType, signal) {
    const headers = {};
    if (method !== "GET") headers["X-CSRF-Token"] = session.csrf;
    if (contentType) headers["Content-Type"] = contentType;
    return fetch(path, { method, body, headers, credentials: "same-origin", signal });
  }

  async function errorText(response) {
    try {
      const data = await response.json();
      if (data && data.error) return String(data.error.code) + ": " + String(data.error.message);
    } catch (error) {
      // not JSON
    }
    return "HTTP " + response.status;
  }

  function applySession(value) {
    session = value;
    document.body.dataset.role = session.role;
    $("nav").hidden = false;
    const who = $("who");
    who.textContent = session.user + " (" + session.role + ")";
    who.hidden = false;
    $("logout").hidden = false;
    $("history-title").hidden = false;
    $("car-history").hidden = false;
    route();
  }

  // The address says what is shown: /, /cars/<VIN>, /rollouts.
  function route() {
    if (!session) return;
    const path = location.pathname;
    view = path === "/rollouts" ? "rollouts" : "fleet";
    const car = /^\/cars\/(.+)$/.exec(path);
    const vin = car ? decodeURIComponent(car[1]) : null;
    if (vin !== selected) select(vin);
    if (view === "rollouts") loadRollouts();
    schedule();
  }

  function drawView() {
    if (!session) return;
    $("fleet").hidden = view !== "fleet";
    $("summary").hidden = view !== "fleet";
    $("rollouts-view").hidden = view !== "rollouts";
    for (const [id, name] of [["nav-cars", "fleet"], ["nav-rollouts", "rollouts"]]) {
      if (view === name) $(id).setAttribute("aria-current", "page");
      else $(id).removeAttribute("aria-current");
    }
    $("car-actions").hidden = !(session.operator && selected !== null && cars.has(selected));
  }

  function checkLoggedIn() {
    fetch("/api/v1/cars?limit=0", { credentials: "same-origin" }).then((response) => {
      if (response.status === 401) {
        location.assign("/login?next=" + encodeURIComponent(location.pathname));
      }
    }).catch(() => {});
  }

  window.addEventListener("popstate", route);
  for (const link of [$("nav-cars"), $("nav-rollouts")]) {
    link.addEventListener("click", (event) => {
      event.preventDefault();
      history.pushState(null, "", link.getAttribute("href"));
      route();
    });
  }

  $("logout").addEventListener("click", () => {
    api("POST", "/logout").finally(() => location.assign("/login"));
  });

  // -- a car's actions (operators) --------------------------------------------------------

  function resetActions() {
    $("action-reply").hidden = true;
    $("action-rollback-confirm").hidden = true;
  }

  function showReply(ok, text) {
    const reply = $("action-reply");
    reply.textContent = text;
    reply.className = ok ? "ok" : "failed";
    reply.hidden = false;
    document.body.dataset.action = ok ? "ok" : "failed";
  }

  async function act(operation, body, contentType) {
    const vin = selected;
    if (vin === null) return;
    document.body.dataset.action = "waiting";
    $("action-reply").hidden = true;
    try {
      const response = await api("POST", "/api/v1/cars/" + encodeURIComponent(vin) + "/" + operation,
        body, contentType);
      const text = await response.text();
      let shown = text;
      try {
        shown = JSON.stringify(JSON.parse(text), null, 2);
      } catch (error) {
        // shown as it came
      }
      showReply(response.ok, "HTTP " + response.status + "\n" + shown);
    } catch (error) {
      showReply(false, String(error));
    }
    if (session) loadHistory();
  }

  for (const [id, operation] of [
    ["action-plan", "manifest/plan"], ["action-apply", "manifest/apply"], ["action-delete", "manifest/delete"],
  ]) {
    $(id).addEventListener("click", () => {
      const manifest = $("manifest").value;
      if (!manifest.trim()) {
        showReply(false, "Write or paste a manifest first.");
        return;
      }
      act(operation, manifest, "application/yaml");
    });
  }
  $("action-rollback").addEventListener("click", () => {
    $("action-rollback-confirm").hidden = false;
  });
  $("action-rollback-confirm").addEventListener("click", () => {
    $("action-rollback-confirm").hidden = true;
    act("manifest/rollback", "{}", "application/json");
  });

  // -- the car's history: its audit trail (who did what, survives restarts) ---------------

  let historyFor = null;

  async function loadHistory() {
    const vin = selected;
    historyFor = vin;
    const list = $("car-history");
    if (vin === null) {
      list.replaceChildren();
      return;
    }
    try {
      const response = await api("GET", "/api/v1/cars/" + encodeURIComponent(vin) + "/audit?limit=1000");
      if (historyFor !== vin) return;
      if (!response.ok) {
        list.replaceChildren(el("li", "quiet", await errorText(response)));
        return;
      }
      const data = await response.json();
      const items = data.items.slice(-50).reverse().map((entry) => {
        const item = el("li");
        item.dataset.seq = String(entry.seq);
        const outcome = entry.detail && entry.detail.outcome ? " → " + String(entry.detail.outcome) : "";
        item.append(
          el("span", "at", shortTime(entry.at)), " ",
          el("span", "actor", String(entry.actor)), " ",
          el("span", "action", String(entry.action) + outcome),
        );
        return item;
      });
      if (!items.length) items.push(el("li", "quiet", "Nothing recorded for this car yet."));
      list.replaceChildren(...items);
      document.body.dataset.history = String(data.items.length);
    } catch (error) {
      list.replaceChildren(el("li", "quiet", String(error)));
    }
  }

  // -- rollouts (GET /api/v1/rollouts; served by fleet-server's rollouts part) ------------

  let rolloutsTimer = 0;
  // A rollout's state as the colours of workload states.
  const ROLLOUT_STATES = {
    running: "running", paused: "pending", pending: "pending", aborting: "stopping",
    failed: "failed", aborted: "failed", succeeded: "succeeded", done: "succeeded", completed: "succeeded",
  };

  async function loadRollouts() {
    clearTimeout(rolloutsTimer);
    if (!session || view !== "rollouts") return;
    $("rollouts-missing").hidden = session.rollouts;
    $("rollouts").hidden = !session.rollouts;
    if (!session.rollouts) return;
    const status = $("rollouts-status");
    try {
      const response = await api("GET", "/api/v1/rollouts");
      if (!response.ok) {
        status.textContent = await errorText(response);
      } else {
        const data = await response.json();
        drawRollouts(Array.isArray(data.items) ? data.items : []);
        status.textContent = "";
      }
    } catch (error) {
      status.textContent = String(error);
    }
    rolloutsTimer = setTimeout(loadRollouts, 2000);
  }

  function rolloutId(item) {
    return String(item.id ?? item.name ?? "");
  }

  function progressText(value) {
    if (value === undefined || value === null) return "";
    if (typeof value !== "object") return String(value);
    return Object.entries(value).map(([k, v]) => k + " " + String(v)).join(", ");
  }

  function drawRollouts(items) {
    const body = $("rollouts").tBodies[0];
    const rows = items.map((item) => {
      const id = rolloutId(item);
      const row = el("tr");
      row.dataset.rollout = id;
      cell(row, id);
      const state = String(item.state ?? "");
      const stateCell = cell(row, "");
      stateCell.append(el("span", "state state-" + (ROLLOUT_STATES[state] || "other"), state));
      // What it waits for (a window, an approval): the service's words.
      if (item.waiting) stateCell.append(" ", el("span", "rollout-waiting quiet", String(item.waiting)));
      cell(row, String(item.selector ?? ""));
      const progress = cell(row, progressText(item.progress ?? item.counts));
      if (item.stage) progress.append(el("div", "rollout-stage quiet", "stage " + String(item.stage)));
      for (const approval of Array.isArray(item.approvals) ? item.approvals : []) {
        const text = "approved " + String(approval.stage) + " by " + String(approval.by);
        progress.append(el("div", "rollout-approval quiet", text));
      }
      cell(row, shortTime(String(item.started_at ?? item.created_at ?? "")), "since");
      const actions = cell(row, "", "rollout-actions");
      const final = ["done", "done-with-failures", "aborted"].includes(state);
      if (session.operator && !final) {
        const verbs = [state === "paused" ? "resume" : "pause"];
        if (String(item.waiting ?? "").startsWith("approval")) verbs.unshift("approve");
        for (const verb of verbs) {
          const button = el("button", "rollout-" + verb, verb.charAt(0).toUpperCase() + verb.slice(1));
          button.type = "button";
          button.addEventListener("click", () => rolloutAction(id, verb));
          actions.append(button, " ");
        }
        // Aborting cannot be undone: the first click asks, the second one aborts.
        const abort = el("button", "rollout-abort", "Abort");
        abort.type = "button";
        abort.addEventListener("click", () => {
          if (abort.dataset.armed) {
            rolloutAction(id, "abort");
          } else {
            abort.dataset.armed = "1";
            abort.textContent = "Confirm abort";
            abort.classList.add("danger");
            clearTimeout(rolloutsTimer); // keep the armed button until it is clicked or left
            rolloutsTimer = setTimeout(loadRollouts, 10000);
          }
        });
        actions.append(abort);
      }
      return row;
    });
    if (!rows.length) {
      const row = el("tr");
      cell(row, "No rollouts yet.", "quiet").colSpan = 6;
      rows.push(row);
    }
    body.replaceChildren(...rows);
  }

  async function rolloutAction(id, verb) {
    const response = await api("POST", "/api/v1/rollouts/" + encodeURIComponent(id) + "/" + verb, "{}",
      "application/json");
    $("rollouts-status").textContent = response.ok ? verb + ": done" : await errorText(response);
    loadRollouts();
  }
})();
