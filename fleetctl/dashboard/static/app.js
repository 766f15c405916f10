// The fleet dashboard's page. It keeps its own copy of the fleet, fed by the server's events
// (the whole model once, then batches of changes), and redraws only what changed, once per
// animation frame. Every value from the broker is set as text (textContent or text nodes),
// never parsed as HTML; the Content-Security-Policy forbids inline script besides.
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

  // "2026-12-02T01:56:57.295+00:00" -> "2026-12-02 01:56:57 UTC"; other text as it is.
  function shortTime(value) {
    const m = /^(\d{4}-\d\d-\d\d)T(\d\d:\d\d:\d\d)(?:\.\d+)?(?:\+00:00|Z)$/.exec(value || "");
    return m ? m[1] + " " + m[2] + " UTC" : value || "";
  }

  // One collator for every comparison: localeCompare with options builds one per call,
  // which makes sorting a thousand cars take a frame of its own.
  const collator = new Intl.Collator(undefined, { numeric: true });
  const compareVins = collator.compare;

  // -- the model --------------------------------------------------------------------------

  function carOf(vin) {
    let car = cars.get(vin);
    if (!car) {
      car = { vin, presence: null, workloads: new Map(), agents: new Map(), row: null, failed: false };
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
    for (const item of snapshot.cars) {
      const car = carOf(item.vin);
      car.presence = item.presence;
      for (const [name, value] of Object.entries(item.workloads)) car.workloads.set(name, value);
      for (const [name, value] of Object.entries(item.agents)) car.agents.set(name, value);
      touch(car);
    }
    outcomes = snapshot.outcomes.slice(0, OUTCOMES_KEPT);
    outcomesDirty = true;
    orderDirty = true;
    detailDirty = true;
    applied += 1;
  }

  function applyChange(change) {
    applied += 1;
    if (change.t === "outcome") {
      outcomes.unshift(change.outcome);
      if (outcomes.length > OUTCOMES_KEPT) outcomes.length = OUTCOMES_KEPT;
      outcomesDirty = true;
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
      cell(row, shortTime(wl.since)).title = wl.since;
      const button = el("button", "logs", "Logs");
      button.type = "button";
      button.addEventListener("click", () => openLogs(car.vin, name));
      cell(row, "").append(button);
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
      cell(row, shortTime(agent.since)).title = agent.since || "";
      return row;
    });
    agentsBody.replaceChildren(...agents);
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
  feed.onerror = () => setLink("reconnecting", "reconnecting…");

  carsBody.addEventListener("click", (event) => {
    const row = event.target.closest(".row");
    if (!row || !row.dataset.vin) return;
    const previous = selected === null ? null : cars.get(selected);
    selected = row.dataset.vin;
    if (previous) dirty.add(previous);
    dirty.add(cars.get(selected));
    detailDirty = true;
    schedule();
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
    const source = new EventSource("/logs?" + query.toString());
    logSource = source;
    source.onmessage = (event) => {
      const message = JSON.parse(event.data);
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
        source.close();
      } else if (message.end) {
        status.textContent = "ended (" + message.end + ")";
        document.body.dataset.logs = "ended";
        source.close();
      }
    };
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
})();
