// Ordo dashboard: a static page over the public v1 API.
//
// The API key is typed once, kept in sessionStorage (this tab only, gone when it closes) and sent
// as a Bearer token; no cookie is set. Views are hash routes:
//   #/                              projects
//   #/projects/ID                   overview
//   #/projects/ID/effects           F and B heatmaps, L, G, D bars
//   #/projects/ID/schedules?a=V&b=W history and a side-by-side diff of two versions
//   #/projects/ID/runs              runs
//   #/projects/ID/runs/RUN          one run, polled while it is active
//   #/projects/ID/learning          calibration and the recommendation against runs
"use strict";

(function () {
  const C = window.OrdoCharts;
  const KEY_STORAGE = "ordo.apiKey";
  const POLL_MS = 2000;
  const PAGE_SIZE = 100;
  const MAX_PAGES = 20;
  const STATUS_COLOURS = { active: "rgb(33,102,172)", stale: "#999933", completed: "#009E73", failed: "rgb(230,97,1)" };
  const ORIGIN = window.location.origin;

  const main = document.getElementById("view");
  const nav = document.getElementById("project-nav");
  const signOutButton = document.getElementById("sign-out");
  const announcer = document.getElementById("announcer");
  let pollTimer = null;
  let renderToken = 0;

  // --- small DOM helpers -------------------------------------------------------------------

  function h(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "class") node.className = value;
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.appendChild(typeof child === "string" || typeof child === "number" ? document.createTextNode(String(child)) : child);
    }
    return node;
  }

  function section(heading, ...children) {
    return h("section", { class: "panel" }, h("h2", {}, heading), ...children);
  }

  function empty(message, command) {
    return h("div", { class: "empty" }, h("p", {}, message), command ? h("pre", {}, h("code", {}, command)) : null);
  }

  function code(value) {
    return h("code", {}, value);
  }

  function shortId(id) {
    return id ? id.slice(0, 8) : "–";
  }

  function when(iso) {
    if (!iso) return "–";
    const date = new Date(iso);
    return date.toLocaleString(undefined, { year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit" });
  }

  function table(headers, rows, caption) {
    return h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        {},
        caption ? h("caption", {}, caption) : null,
        h("thead", {}, h("tr", {}, headers.map((name) => h("th", { scope: "col" }, name)))),
        h("tbody", {}, rows.map((cells) => h("tr", {}, cells.map((cell) => h("td", {}, cell)))))
      )
    );
  }

  function badge(status) {
    return h("span", { class: `badge status-${status}` }, status);
  }

  function announce(message) {
    announcer.textContent = message;
  }

  // --- the API -----------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, detail) {
      super(detail);
      this.status = status;
    }
  }

  function apiKey() {
    return window.sessionStorage.getItem(KEY_STORAGE);
  }

  async function api(path, options) {
    const init = Object.assign({ method: "GET" }, options || {});
    init.headers = Object.assign({ Authorization: `Bearer ${apiKey()}`, Accept: "application/json" }, init.headers || {});
    init.credentials = "omit";
    init.cache = "no-store";
    const response = await fetch(ORIGIN + path, init);
    if (!response.ok) {
      let detail = response.statusText;
      try {
        const problem = await response.json();
        detail = problem.detail || detail;
      } catch (_ignored) {
        // not JSON: keep the status text
      }
      throw new ApiError(response.status, detail);
    }
    return response.json();
  }

  async function pages(path) {
    const items = [];
    let token = null;
    for (let page = 0; page < MAX_PAGES; page++) {
      const separator = path.includes("?") ? "&" : "?";
      const url = `${path}${separator}page_size=${PAGE_SIZE}${token ? `&page_token=${encodeURIComponent(token)}` : ""}`;
      const body = await api(url);
      items.push(...body.items);
      token = body.next_page_token;
      if (!token) break;
    }
    return items;
  }

  const project = (id) => `/v1/projects/${encodeURIComponent(id)}`;

  // --- sign-in -----------------------------------------------------------------------------

  // Tests and scripts wait for data-ready on <main>; data-route says which view it holds.
  function markReady(routeName) {
    main.setAttribute("data-route", routeName);
    main.setAttribute("data-ready", "true");
  }

  function renderSignIn(message) {
    nav.replaceChildren();
    signOutButton.hidden = true;
    const input = h("input", { id: "api-key", type: "password", name: "api-key", autocomplete: "off", required: true, spellcheck: "false", "aria-describedby": "api-key-help" });
    const form = h(
      "form",
      { class: "sign-in", onsubmit: (event) => signIn(event, input) },
      h("h2", {}, "Sign in"),
      message ? h("p", { class: "error", role: "alert" }, message) : null,
      h("label", { for: "api-key" }, "API key"),
      input,
      h("p", { id: "api-key-help", class: "help" }, "A project key (admin or trainer) or the global admin token. It stays in this tab (sessionStorage) and is sent only to this server, as a Bearer token."),
      h("button", { type: "submit" }, "Sign in")
    );
    main.replaceChildren(form);
    markReady("sign-in");
    input.focus();
  }

  async function signIn(event, input) {
    event.preventDefault();
    const key = input.value.trim();
    if (!key) return;
    window.sessionStorage.setItem(KEY_STORAGE, key);
    try {
      await api("/v1/projects?limit=1");
    } catch (error) {
      window.sessionStorage.removeItem(KEY_STORAGE);
      renderSignIn(error.status === 401 ? "This key was refused: check it, or ask a project admin for one." : `Sign-in failed: ${error.message}`);
      return;
    }
    route();
  }

  function signOut() {
    window.sessionStorage.removeItem(KEY_STORAGE);
    window.location.hash = "#/";
    renderSignIn(null);
  }

  // --- routing -----------------------------------------------------------------------------

  function parseHash() {
    const raw = window.location.hash.replace(/^#/, "") || "/";
    const [path, query] = raw.split("?");
    const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
    return { parts: parts, params: new URLSearchParams(query || "") };
  }

  function projectNav(projectId, active) {
    const links = [
      ["overview", "Overview", ""],
      ["effects", "Effects", "/effects"],
      ["schedules", "Schedules", "/schedules"],
      ["runs", "Runs", "/runs"],
      ["learning", "Learning", "/learning"],
    ];
    nav.replaceChildren(
      h("a", { href: "#/" }, "Projects"),
      ...links.map(([name, label, suffix]) => h("a", { href: `#/projects/${encodeURIComponent(projectId)}${suffix}`, "aria-current": name === active ? "page" : null }, label))
    );
  }

  async function route() {
    window.clearTimeout(pollTimer);
    pollTimer = null;
    const token = ++renderToken;
    main.removeAttribute("data-ready");
    if (!apiKey()) {
      renderSignIn(null);
      return;
    }
    signOutButton.hidden = false;
    const { parts, params } = parseHash();
    let view;
    let active = null;
    let projectId = null;
    if (parts.length === 0) {
      view = () => viewProjects();
    } else if (parts[0] === "projects" && parts.length >= 2) {
      projectId = parts[1];
      const sub = parts[2] || "overview";
      active = sub;
      if (sub === "overview") view = () => viewOverview(projectId);
      else if (sub === "effects") view = () => viewEffects(projectId);
      else if (sub === "schedules") view = () => viewSchedules(projectId, params);
      else if (sub === "runs" && parts[3]) view = () => viewRun(projectId, parts[3], token);
      else if (sub === "runs") view = () => viewRuns(projectId);
      else if (sub === "learning") view = () => viewLearning(projectId);
    }
    if (projectId) projectNav(projectId, active);
    else nav.replaceChildren(h("a", { href: "#/", "aria-current": "page" }, "Projects"));
    const routeName = window.location.hash.replace(/^#/, "") || "/";
    if (!view) {
      main.replaceChildren(empty("No such page.", null), h("p", {}, h("a", { href: "#/" }, "Back to the projects")));
      markReady(routeName);
      return;
    }
    main.setAttribute("aria-busy", "true");
    main.replaceChildren(h("p", { class: "loading" }, "Loading…"));
    try {
      const content = await view();
      if (token !== renderToken) return;
      main.replaceChildren(...content);
      markReady(routeName);
      document.title = `${main.querySelector("h1") ? main.querySelector("h1").textContent + " · " : ""}Ordo dashboard`;
    } catch (error) {
      if (token !== renderToken) return;
      if (error instanceof ApiError && error.status === 401) {
        window.sessionStorage.removeItem(KEY_STORAGE);
        renderSignIn("The key is no longer accepted (revoked or expired): sign in again.");
        return;
      }
      const hint = error instanceof ApiError && error.status === 404 ? "This key cannot see it, or it does not exist." : "";
      main.replaceChildren(h("div", { class: "error", role: "alert" }, h("h1", {}, "Could not load this view"), h("p", {}, `${error.message} ${hint}`)));
      markReady(routeName);
    } finally {
      main.removeAttribute("aria-busy");
    }
  }

  // --- projects ------------------------------------------------------------------------------

  async function viewProjects() {
    const projects = await api("/v1/projects?limit=100");
    const heading = h("h1", {}, "Projects");
    if (!projects.length) {
      return [heading, empty("No projects yet. Create one with the global admin token, then add tasks and a trainer key (README, “A five-minute tour”):", 'curl -X POST "$ORDO/v1/projects" -H "Authorization: Bearer $ADMIN_TOKEN" \\\n  -H "Content-Type: application/json" -d \'{"name": "my-curriculum"}\'')];
    }
    const rows = await Promise.all(
      projects.map(async (p) => {
        const [tasks, runs, schedules] = await Promise.all([
          api(`${project(p.id)}/tasks`),
          api(`${project(p.id)}/runs?page_size=${PAGE_SIZE}`),
          api(`${project(p.id)}/schedules?page_size=1`),
        ]);
        const latest = schedules.items[0];
        return [
          h("a", { href: `#/projects/${encodeURIComponent(p.id)}` }, p.name),
          p.description || "",
          String(tasks.length),
          `${runs.items.length}${runs.next_page_token ? "+" : ""}`,
          latest ? `v${latest.version} · ${latest.order.join(" → ")}` : "none yet",
          when(p.created_at),
        ];
      })
    );
    return [heading, section("Projects this key can see", table(["Project", "Description", "Tasks", "Runs", "Latest schedule", "Created"], rows))];
  }

  // --- overview --------------------------------------------------------------------------------

  function tasksTable(tasks) {
    return table(
      ["#", "Key", "Name", "Kind", "Reward", "Goal", "Scale", "Weight"],
      tasks.map((t) => [String(t.index), code(t.key), t.name, t.kind, t.reward, t.goal, C.fmt(t.scale, 2), C.fmt(t.weight, 2)])
    );
  }

  function recommendationOf(schedules) {
    // The newest schedule asked for outside a run is the project's current recommendation;
    // else the newest plan of any run.
    return schedules.find((s) => s.run_id === null) || schedules[0] || null;
  }

  function scheduleFigures(s) {
    return h(
      "dl",
      { class: "figures" },
      h("dt", {}, "Version"), h("dd", { "data-testid": "schedule-version" }, `v${s.version}${s.label ? ` · ${s.label}` : ""}`),
      h("dt", {}, "Order"), h("dd", {}, s.order.join(" → ")),
      h("dt", {}, "Predicted objective"), h("dd", {}, `${C.fmt(s.predicted.objective.mean)} ± ${C.fmt(s.predicted.objective.std)}`),
      h("dt", {}, "Method, status"), h("dd", {}, `${s.method}, ${s.status}`),
      h("dt", {}, "Estimates version"), h("dd", {}, String(s.estimates_version)),
      h("dt", {}, "Solved"), h("dd", {}, when(s.created_at))
    );
  }

  function predictedPlot(s, label) {
    return C.intervalPlot({
      label: label,
      tasks: s.predicted.tasks.map((t) => t.task),
      series: [{ name: `v${s.version}`, points: s.predicted.tasks }],
    });
  }

  async function solveRecommendation(projectId, button, status) {
    button.disabled = true;
    status.textContent = "Solving…";
    try {
      await api(`${project(projectId)}/schedules`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ label: "dashboard recommendation" }) });
      route();
    } catch (error) {
      status.textContent = error.status === 403 ? "Only a project admin key may solve a schedule." : `Could not solve: ${error.message}`;
      button.disabled = false;
    }
  }

  async function viewOverview(projectId) {
    const [p, tasks, runs, schedules] = await Promise.all([
      api(project(projectId)),
      api(`${project(projectId)}/tasks`),
      pages(`${project(projectId)}/runs`),
      api(`${project(projectId)}/schedules?page_size=${PAGE_SIZE}`),
    ]);
    const out = [h("h1", {}, p.name), p.description ? h("p", { class: "lead" }, p.description) : null];
    out.push(
      h(
        "dl",
        { class: "figures" },
        h("dt", {}, "Estimates version"), h("dd", { "data-testid": "estimates-version" }, String(p.estimates_version)),
        h("dt", {}, "Tasks"), h("dd", {}, String(tasks.length)),
        h("dt", {}, "Runs"), h("dd", {}, String(runs.length)),
        h("dt", {}, "Forward retention rho"), h("dd", {}, C.fmt(p.settings.rho, 2))
      )
    );
    out.push(
      section(
        "Tasks",
        tasks.length
          ? tasksTable(tasks)
          : empty("No tasks yet: add them in one batch with a project admin key.", `curl -X POST "$ORDO/v1/projects/${projectId}/tasks" -H "Authorization: Bearer $ADMIN_KEY" \\\n  -H "Content-Type: application/json" -d '{"tasks": [{"key": "math", "kind": "structured"}]}'`)
      )
    );
    const counts = {};
    for (const run of runs) counts[run.status] = (counts[run.status] || 0) + 1;
    out.push(
      section(
        "Runs by status",
        runs.length
          ? h(
              "div",
              {},
              C.stackedBar({ label: "runs by status", parts: ["active", "stale", "completed", "failed"].map((s) => ({ label: s, count: counts[s] || 0, colour: STATUS_COLOURS[s], hatch: s === "stale" || s === "failed" })) }),
              h("p", {}, ["active", "stale", "completed", "failed"].map((s) => h("span", { class: "count" }, badge(s), ` ${counts[s] || 0} `)), h("a", { href: `#/projects/${projectId}/runs` }, "All runs →"))
            )
          : empty("No runs yet: start one with a trainer key, then report each stage.", `curl -X POST "$ORDO/v1/projects/${projectId}/runs" -H "Authorization: Bearer $TRAINER_KEY" \\\n  -H "Content-Type: application/json" -d '{"adaptive": true}'`)
      )
    );
    const recommendation = recommendationOf(schedules.items);
    const status = h("span", { class: "help", role: "status" });
    const button = h("button", { type: "button", onclick: () => solveRecommendation(projectId, button, status) }, "Solve a new recommendation");
    out.push(
      section(
        "Current recommendation",
        recommendation
          ? h(
              "div",
              {},
              recommendation.run_id !== null ? h("p", { class: "help" }, "No recommendation asked outside a run yet: this is the newest plan of a run.") : null,
              scheduleFigures(recommendation),
              h("h3", {}, "Predicted final utility per task (95 % interval)"),
              predictedPlot(recommendation, "predicted final utility per task of the recommendation")
            )
          : empty(tasks.length ? "No schedule yet: solve the recommendation (project admin key), or start a run." : "Add tasks first; then solve a recommendation.", null),
        tasks.length ? h("p", {}, button, " ", status) : null
      )
    );
    return out;
  }

  // --- effects -------------------------------------------------------------------------------

  async function viewEffects(projectId) {
    const [estimates, tasks] = await Promise.all([api(`${project(projectId)}/estimates`), api(`${project(projectId)}/tasks`)]);
    const out = [h("h1", {}, "Effects"), h("p", { class: "lead" }, `Posterior estimates, version ${estimates.version}. Row: the task trained; column: the task it moves.`)];
    if (!estimates.tasks.length) {
      out.push(empty("No tasks yet, so no effects: add tasks, import priors (POST …/priors) or report runs.", null));
      return out;
    }
    const kinds = new Map(tasks.map((t) => [t.key, t.kind]));
    const info = h("p", { class: "cell-info", "aria-live": "polite" }, "Hover or focus a cell (Tab) to read its mean ± std and what it rests on.");
    const observed = estimates.F.count.flat().concat(estimates.B.count.flat()).some((c) => c > 0);
    if (!observed) out.push(empty("Every pairwise cell is still a prior: report the stages of a run to learn the effects.", null));
    out.push(info);
    out.push(
      h(
        "div",
        { class: "grid-2" },
        section("F: forward transfer (i trained before j)", C.heatmap({ effect: "F", label: "forward transfer F heatmap", tasks: estimates.tasks, mean: estimates.F.mean, std: estimates.F.std, count: estimates.F.count, onFocus: (t) => (info.textContent = t) })),
        section("B: backward transfer (i trained after j; negative is forgetting)", C.heatmap({ effect: "B", label: "backward transfer B heatmap", tasks: estimates.tasks, mean: estimates.B.mean, std: estimates.B.std, count: estimates.B.count, onFocus: (t) => (info.textContent = t) }))
      )
    );
    const bars = ["L", "G", "D"].map((effect) => {
      const rows = estimates.tasks.map((task, j) => ({ task: task, kind: kinds.get(task) || "?", mean: estimates[effect].mean[j], std: estimates[effect].std[j], count: estimates[effect].count[j] }));
      const titles = { L: "L: level right after training the task", G: "G: gain of the task's stage", D: "D: entropy drift of the task's stage" };
      return section(titles[effect], C.effectBars({ effect: effect, label: `${effect} per task`, rows: rows }));
    });
    out.push(h("div", { class: "grid-3" }, bars));
    out.push(C.legend([
      { label: "positive", colour: "rgb(33,102,172)" },
      { label: "negative", colour: "rgb(230,97,1)" },
      { label: "hatched: prior only", hatch: true },
      { label: "whiskers: 95 % interval", colour: "#333", shape: "cross" },
    ]));
    return out;
  }

  // --- schedules -----------------------------------------------------------------------------

  async function viewSchedules(projectId, params) {
    const schedules = await pages(`${project(projectId)}/schedules`);
    const out = [h("h1", {}, "Schedules")];
    if (!schedules.length) {
      out.push(empty("No schedules yet: solve the recommendation with a project admin key, or start a run.", `curl -X POST "$ORDO/v1/projects/${projectId}/schedules" -H "Authorization: Bearer $ADMIN_KEY" \\\n  -H "Content-Type: application/json" -d '{}'`));
      return out;
    }
    const byVersion = new Map(schedules.map((s) => [s.version, s]));
    const byId = new Map(schedules.map((s) => [s.id, s]));
    const newest = schedules[0].version;
    const pick = (name, fallback) => {
      const v = Number(params.get(name));
      return byVersion.has(v) ? v : fallback;
    };
    const b = pick("b", newest);
    const a = pick("a", schedules.length > 1 ? schedules.find((s) => s.version !== b).version : b);
    const href = (va, vb) => `#/projects/${encodeURIComponent(projectId)}/schedules?a=${va}&b=${vb}`;
    const chronological = schedules.slice().reverse();
    out.push(
      section(
        "History",
        C.timeline({
          label: "schedule history: objective per version",
          items: chronological.map((s) => ({
            version: s.version,
            objective: s.objective,
            bound: s.bound,
            parentVersion: s.parent_id && byId.has(s.parent_id) ? byId.get(s.parent_id).version : null,
            replan: s.parent_id !== null,
            selected: s.version === a || s.version === b,
            href: href(b === s.version ? a : b, s.version),
            description: `v${s.version}${s.label ? ` (${s.label})` : ""}: objective ${C.fmt(s.objective)}${s.bound !== null ? `, bound ${C.fmt(s.bound)}, gap ${C.fmt(s.gap)}` : ""}, ${s.method}`,
          })),
        }),
        table(
          ["Version", "Compare", "Label", "Method", "Objective", "Bound", "Gap", "Status", "Parent", "Run", "Solved"],
          schedules.map((s) => [
            `v${s.version}`,
            h("span", { class: "compare" }, h("a", { href: href(s.version, b), "aria-label": `compare v${s.version} as A`, "aria-current": s.version === a ? "true" : null }, "A"), " ", h("a", { href: href(a, s.version), "aria-label": `compare v${s.version} as B`, "aria-current": s.version === b ? "true" : null }, "B")),
            s.label.length > 36 ? h("span", { title: s.label }, `${s.label.slice(0, 35)}…`) : s.label,
            s.method,
            C.fmt(s.objective),
            C.fmt(s.bound),
            C.fmt(s.gap),
            s.status,
            s.parent_id && byId.has(s.parent_id) ? `v${byId.get(s.parent_id).version}` : "–",
            s.run_id ? h("a", { href: `#/projects/${encodeURIComponent(projectId)}/runs/${encodeURIComponent(s.run_id)}` }, shortId(s.run_id)) : "–",
            when(s.created_at),
          ])
        )
      )
    );
    const sa = byVersion.get(a);
    const sb = byVersion.get(b);
    const moved = sb.order.filter((task) => sa.order.includes(task) && sa.order.indexOf(task) !== sb.order.indexOf(task));
    out.push(
      section(
        `Compare v${a} and v${b}`,
        h("p", { class: "lead" }, moved.length ? `Tasks that moved: ${moved.join(", ")}.` : "Same order in both."),
        h(
          "div",
          { class: "grid-2" },
          h("div", {}, h("h3", {}, "Orders"), C.orderDiff({ label: `orders of v${a} and v${b}`, a: { name: `v${a}`, order: sa.order }, b: { name: `v${b}`, order: sb.order } })),
          h(
            "div",
            {},
            h("h3", {}, "Predicted final utility (95 % interval)"),
            C.intervalPlot({
              label: `predicted final utility of v${a} and v${b}`,
              tasks: Array.from(new Set(sb.order.concat(sa.order))),
              series: [
                { name: `v${a}`, points: sa.predicted.tasks, colour: "rgb(230,97,1)", shape: "square" },
                { name: `v${b}`, points: sb.predicted.tasks, colour: "rgb(33,102,172)", shape: "circle" },
              ],
            }),
            C.legend([{ label: `A: v${a}`, colour: "rgb(230,97,1)", shape: "square" }, { label: `B: v${b}`, colour: "rgb(33,102,172)", shape: "circle" }])
          )
        ),
        h("div", { class: "grid-2" }, scheduleFigures(sa), scheduleFigures(sb))
      )
    );
    return out;
  }

  // --- runs ----------------------------------------------------------------------------------

  async function viewRuns(projectId) {
    const runs = await pages(`${project(projectId)}/runs`);
    const out = [h("h1", {}, "Runs")];
    if (!runs.length) {
      out.push(empty("No runs yet: start one with a trainer key, then follow GET …/next and report each stage.", `curl -X POST "$ORDO/v1/projects/${projectId}/runs" -H "Authorization: Bearer $TRAINER_KEY" \\\n  -H "Content-Type: application/json" -d '{"adaptive": true}'`));
      return out;
    }
    // A lease matters while a run is live; the list does not carry it, the run does.
    const live = runs.filter((r) => r.status === "active" || r.status === "stale");
    const details = new Map((await Promise.all(live.map((r) => api(`${project(projectId)}/runs/${encodeURIComponent(r.id)}`)))).map((r) => [r.id, r]));
    out.push(
      section(
        `${runs.length} run${runs.length === 1 ? "" : "s"}, newest first`,
        table(
          ["Run", "Client id", "Status", "Progress", "Kind", "Lease", "Started", "Finished"],
          runs.map((r) => {
            const detail = details.get(r.id);
            const reported = Math.min(r.next_stage, r.stage_count + 1);
            return [
              h("a", { href: `#/projects/${encodeURIComponent(projectId)}/runs/${encodeURIComponent(r.id)}` }, shortId(r.id)),
              r.client_id || "–",
              badge(r.status),
              h("span", {}, h("progress", { max: r.stage_count + 1, value: reported, "aria-label": `${reported} of ${r.stage_count + 1} reports` }), ` ${reported}/${r.stage_count + 1}`),
              `${r.adaptive ? "adaptive" : "fixed"}, ${r.strategy}, ${r.level_model}`,
              detail ? `token ${detail.lease.token}, until ${when(detail.lease.expires_at)}` : "–",
              when(r.created_at),
              r.finished_at ? when(r.finished_at) : r.fail_reason || "–",
            ];
          })
        )
      )
    );
    return out;
  }

  function runCurves(run, tasks, field, label, yTitle) {
    const reports = run.reports.slice().sort((x, y) => x.stage - y.stage);
    const trained = new Map(reports.map((r) => [r.stage, r.task]));
    for (const stage of run.stages) if (!trained.has(stage.index)) trained.set(stage.index, stage.task);
    const series = tasks
      .map((task, k) => ({
        name: task,
        colour: C.category(k),
        shape: C.SHAPES[k % C.SHAPES.length],
        points: reports.flatMap((r) => {
          const evaluation = r.evaluations.find((e) => e.task === task);
          return evaluation && evaluation[field] !== null ? [{ x: r.stage, y: evaluation[field] }] : [];
        }),
      }))
      .filter((s) => s.points.length);
    if (!series.length) return empty(field === "entropy" ? "No entropy reported yet (send `entropy` with each evaluation)." : "No report yet: the trainer reports stage 0 (the baseline) first.", null);
    return C.lineChart({
      label: label,
      series: series,
      xDomain: [0, Math.max(run.stage_count, 1)],
      xLabels: (stage) => (stage === 0 ? ["0", "baseline"] : [String(stage), trained.get(stage) || ""]),
      xLabelLines: 2,
      pointLabel: (p) => `stage ${p.x}${trained.get(p.x) ? ` (after ${trained.get(p.x)})` : ""}`,
      xTitle: "stage (task trained)",
      yTitle: yTitle,
      width: 640,
    });
  }

  async function viewRun(projectId, runId, token) {
    const [run, tasks] = await Promise.all([api(`${project(projectId)}/runs/${encodeURIComponent(runId)}`), api(`${project(projectId)}/tasks`)]);
    const taskKeys = tasks.map((t) => t.key);
    const container = h("div", {});
    const stamp = h("p", { class: "help", role: "status" });

    const signature = (r) => JSON.stringify([r.status, r.reports.length, r.schedules.length, r.next_stage, r.lease.token, r.lease.expires_at]);
    let shown = null;
    let reportsShown = 0;

    const draw = (current) => {
      shown = signature(current);
      reportsShown = current.reports.length;
      const reported = current.reports.length;
      const liveNow = current.status === "active" || current.status === "stale";
      const stages = h(
        "ol",
        { class: "stages", "aria-label": "the trained order" },
        current.stages.map((s) => h("li", { class: `stage stage-${s.status}` }, h("span", { class: "stage-index" }, String(s.index)), " ", code(s.task), h("span", { class: "stage-status" }, s.status)))
      );
      const replans = current.schedules.map((s, i) => [
        `v${s.version}`,
        i === 0 ? "first plan" : `re-plan of v${current.schedules[i - 1].version}`,
        when(s.created_at),
        i === 0 ? "–" : h("a", { href: `#/projects/${encodeURIComponent(projectId)}/schedules?a=${current.schedules[i - 1].version}&b=${s.version}` }, "diff"),
      ]);
      container.replaceChildren(
        h(
          "dl",
          { class: "figures" },
          h("dt", {}, "Status"), h("dd", {}, badge(current.status), current.fail_reason ? ` ${current.fail_reason}` : ""),
          h("dt", {}, "Kind"), h("dd", {}, `${current.adaptive ? "adaptive" : "fixed"}, ${current.strategy}, ${current.level_model}`),
          h("dt", {}, "Reports"), h("dd", { "data-testid": "reports-count" }, `${reported} of ${current.stage_count + 1} (stage 0 is the baseline)`),
          h("dt", {}, "Lease"), h("dd", {}, liveNow ? `token ${current.lease.token}, expires ${when(current.lease.expires_at)}` : "released"),
          h("dt", {}, "Started"), h("dd", {}, when(current.created_at)),
          h("dt", {}, "Finished"), h("dd", {}, when(current.finished_at))
        ),
        section("Trained order", stages),
        h(
          "div",
          { class: "grid-2", "data-reports": String(reported) },
          section("Evaluation per task (utility, higher is better)", runCurves(current, taskKeys, "utility", "utility of every task after each stage", "utility")),
          section("Entropy per task", runCurves(current, taskKeys, "entropy", "policy entropy of every task after each stage", "entropy"))
        ),
        section("Plans it followed", replans.length > 1 ? null : h("p", { class: "help" }, current.adaptive ? "No re-plan yet: each report of an adaptive run re-plans the stages left." : "A fixed run keeps its first plan."), table(["Schedule", "Why", "Solved", "Compare"], replans))
      );
    };

    const poll = async () => {
      if (token !== renderToken) return;
      try {
        const current = await api(`${project(projectId)}/runs/${encodeURIComponent(runId)}`);
        if (token !== renderToken) return;
        // Redraw only on change, so that a poll does not take the keyboard focus away.
        const now = signature(current);
        if (now !== shown) {
          const moreReports = current.reports.length !== reportsShown;
          draw(current);
          if (moreReports) announce(`Run updated: ${current.reports.length} reports.`);
        }
        stamp.textContent = `Live: refreshed every ${POLL_MS / 1000} s, last at ${new Date().toLocaleTimeString()}.`;
        if (current.status === "active" || current.status === "stale") pollTimer = window.setTimeout(poll, POLL_MS);
        else stamp.textContent = `The run is ${current.status}: no more updates.`;
      } catch (error) {
        if (token !== renderToken) return;
        stamp.textContent = `Live updates paused: ${error.message}. Retrying.`;
        pollTimer = window.setTimeout(poll, POLL_MS * 3);
      }
    };

    draw(run);
    if (run.status === "active" || run.status === "stale") {
      stamp.textContent = `Live: refreshed every ${POLL_MS / 1000} s.`;
      pollTimer = window.setTimeout(poll, POLL_MS);
    } else {
      stamp.textContent = `The run is ${run.status}.`;
    }
    return [h("h1", {}, `Run ${shortId(run.id)}`, run.client_id ? h("span", { class: "subtitle" }, ` ${run.client_id}`) : null), stamp, container];
  }

  // --- learning ------------------------------------------------------------------------------

  async function viewLearning(projectId) {
    const [calibration, tasks, runs, schedules] = await Promise.all([
      api(`${project(projectId)}/calibration`),
      api(`${project(projectId)}/tasks`),
      pages(`${project(projectId)}/runs`),
      pages(`${project(projectId)}/schedules`),
    ]);
    const out = [h("h1", {}, "Learning"), h("p", { class: "lead" }, "Is Ordo learning? Its predictions against what the completed runs realized, and its recommendation against the best run so far.")];
    if (!calibration.runs.length) {
      out.push(empty("No completed run yet: report every stage of a run, then mark it complete; its final utilities are compared with what its plans predicted.", `curl -X POST "$ORDO/v1/projects/${projectId}/runs/$RUN/complete" -H "Authorization: Bearer $TRAINER_KEY" -H "Ordo-Lease-Token: $LEASE_TOKEN"`));
      return out;
    }
    const scheduleById = new Map(schedules.map((s) => [s.id, s]));
    const points = [];
    for (const run of calibration.runs) {
      const final = scheduleById.get(run.final_schedule_id);
      for (const t of run.tasks) {
        const predicted = final ? final.predicted.tasks.find((p) => p.task === t.task) : undefined;
        points.push({
          label: `run ${shortId(run.run_id)}, ${t.task}`,
          task: t.task,
          predicted: t.predicted_final,
          observed: t.observed,
          lower: predicted ? predicted.lower : undefined,
          upper: predicted ? predicted.upper : undefined,
          inside: t.inside_final,
        });
      }
    }
    const taskIndex = new Map(tasks.map((t, k) => [t.key, k]));
    const pct = (v) => (v === null || v === undefined ? "–" : `${Math.round(v * 100)} %`);
    out.push(
      h(
        "div",
        { class: "grid-2" },
        section(
          "Calibration: predicted against realized final utility",
          C.calibration({ label: "calibration scatter of predicted against realized final utility", points: points, colour: (p) => C.category(taskIndex.get(p.task) || 0) }),
          C.legend(tasks.map((t, k) => ({ label: t.key, colour: C.category(k), shape: "circle" })).concat([{ label: "outside the 95 % interval", colour: "#333", shape: "cross" }])),
          h("p", { class: "help" }, "The diagonal is a perfect prediction; each whisker is the run's last plan's 95 % interval.")
        ),
        section(
          "Coverage and error",
          h(
            "dl",
            { class: "figures" },
            h("dt", {}, "Completed runs compared"), h("dd", {}, String(calibration.runs.length)),
            h("dt", {}, "Task predictions"), h("dd", {}, String(calibration.count)),
            h("dt", {}, "Coverage, last plans (95 % intervals)"), h("dd", { "data-testid": "coverage-final" }, pct(calibration.coverage_final)),
            h("dt", {}, "Coverage, first plans"), h("dd", {}, pct(calibration.coverage_initial)),
            h("dt", {}, "Mean absolute error, last plans"), h("dd", {}, C.fmt(calibration.mae_final)),
            h("dt", {}, "Mean absolute error, first plans"), h("dd", {}, C.fmt(calibration.mae_initial))
          ),
          h("p", { class: "help" }, "Near 95 % coverage means the intervals are honest; far below, they are too narrow.")
        )
      )
    );
    // The recommendation's predicted objective and the best observed run, against the number of
    // completed runs when each was known.
    const weights = new Map(tasks.map((t) => [t.key, t.weight]));
    const finished = new Map(runs.filter((r) => r.finished_at).map((r) => [r.id, r.finished_at]));
    const observedRuns = calibration.runs
      .filter((r) => finished.has(r.run_id))
      .map((r) => ({ at: finished.get(r.run_id), value: r.tasks.reduce((sum, t) => sum + (weights.get(t.task) || 0) * t.observed, 0) }))
      .sort((x, y) => (x.at < y.at ? -1 : 1));
    let best = -Infinity;
    const bestPoints = observedRuns.map((r, i) => {
      best = Math.max(best, r.value);
      return { x: i + 1, y: best };
    });
    const completedBefore = (iso) => observedRuns.filter((r) => r.at <= iso).length;
    const recommendations = schedules
      .filter((s) => s.request && s.request.objective === "expected" && !(s.request.prefix && s.request.prefix.length) && s.order.length === tasks.length)
      .map((s) => ({ s: s, x: completedBefore(s.created_at) }));
    const latestPerCount = new Map();
    for (const item of recommendations.sort((x, y) => (x.s.created_at < y.s.created_at ? -1 : 1))) latestPerCount.set(item.x, item.s);
    const recommendationPoints = Array.from(latestPerCount.entries())
      .sort((x, y) => x[0] - y[0])
      .map(([x, s]) => ({ x: x, y: s.predicted.objective.mean, band: [s.predicted.objective.mean - 1.96 * s.predicted.objective.std, s.predicted.objective.mean + 1.96 * s.predicted.objective.std] }));
    const series = [];
    if (recommendationPoints.length) series.push({ name: "recommendation, predicted (95 % band)", points: recommendationPoints, colour: "rgb(33,102,172)", shape: "circle" });
    if (bestPoints.length) series.push({ name: "best observed run", points: bestPoints, colour: "rgb(230,97,1)", shape: "square", step: true, dashed: true });
    out.push(
      section(
        "Recommendation against the best observed run",
        series.length
          ? C.lineChart({ label: "recommendation predicted objective and best observed run against completed runs", series: series, xDomain: [0, Math.max(observedRuns.length, 1)], xLabels: (count) => [String(count)], xTitle: "completed runs", yTitle: "objective (weighted utility)", pointLabel: (p) => `${p.x} completed runs`, width: 640 })
          : empty("No recommendation on every task yet: solve one (Overview) to compare it with the runs.", null),
        h("p", { class: "help" }, "Objective: the weighted sum of final utilities. A recommendation is drawn at the number of runs completed when it was solved (the newest per count).")
      )
    );
    return out;
  }

  // --- start -------------------------------------------------------------------------------

  signOutButton.addEventListener("click", signOut);
  window.addEventListener("hashchange", route);
  route();
})();
