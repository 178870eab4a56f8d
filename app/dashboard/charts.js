// Ordo dashboard: small inline-SVG charts, no dependencies.
//
// Colours are colour-blind safe: a blue-orange diverging scale for signed effects, the
// Okabe-Ito palette for categories (tasks), and every category also has its own marker shape,
// so no chart relies on hue alone. Every mark carries a <title> (hover) and the focusable ones
// an aria-label (keyboard).
"use strict";

(function () {
  const NS = "http://www.w3.org/2000/svg";
  const BLUE = [33, 102, 172];
  const ORANGE = [230, 97, 1];
  const MID = [247, 247, 247];
  const CATEGORY = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#000000", "#999933"];
  const SHAPES = ["circle", "square", "triangle", "diamond", "triangle-down", "cross"];
  const FONT = 12;
  let uid = 0;

  function el(tag, attrs, children) {
    const node = document.createElementNS(NS, tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value !== null && value !== undefined) node.setAttribute(name, String(value));
    }
    for (const child of children || []) if (child) node.appendChild(child);
    return node;
  }

  function text(x, y, content, attrs) {
    const node = el("text", Object.assign({ x: x, y: y }, attrs || {}));
    node.textContent = content;
    return node;
  }

  function title(content) {
    const node = el("title");
    node.textContent = content;
    return node;
  }

  function svgRoot(width, height, label) {
    return el("svg", {
      viewBox: `0 0 ${width} ${height}`,
      width: width,
      height: height,
      role: "img",
      "aria-label": label,
      class: "chart",
    });
  }

  function fmt(value, digits) {
    if (value === null || value === undefined || Number.isNaN(value)) return "–";
    return Number(value).toFixed(digits === undefined ? 3 : digits);
  }

  function linear(domain, range) {
    const [d0, d1] = domain[0] === domain[1] ? [domain[0] - 1, domain[1] + 1] : domain;
    const scale = (v) => range[0] + ((v - d0) / (d1 - d0)) * (range[1] - range[0]);
    scale.domain = [d0, d1];
    return scale;
  }

  function niceTicks(min, max, count) {
    if (!(max > min)) return [min];
    const raw = (max - min) / Math.max(count, 1);
    const magnitude = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 2.5, 5, 10].map((m) => m * magnitude).find((s) => s >= raw) || raw;
    const ticks = [];
    for (let v = Math.ceil(min / step) * step; v <= max + step * 1e-9; v += step) {
      ticks.push(Math.abs(v) < step * 1e-9 ? 0 : v);
    }
    return ticks;
  }

  function extent(values, pad) {
    const finite = values.filter((v) => v !== null && v !== undefined && Number.isFinite(v));
    if (!finite.length) return [0, 1];
    let lo = Math.min(...finite);
    let hi = Math.max(...finite);
    if (lo === hi) {
      lo -= 0.5;
      hi += 0.5;
    }
    const margin = (hi - lo) * (pad === undefined ? 0.05 : pad);
    return [lo - margin, hi + margin];
  }

  function mix(a, b, t) {
    return a.map((v, i) => Math.round(v + (b[i] - v) * t));
  }

  // Signed value in [-limit, limit] -> orange (negative) .. light grey .. blue (positive).
  function diverging(value, limit) {
    const t = Math.max(-1, Math.min(1, value / (limit || 1)));
    const rgb = t < 0 ? mix(MID, ORANGE, -t) : mix(MID, BLUE, t);
    return `rgb(${rgb[0]},${rgb[1]},${rgb[2]})`;
  }

  function category(index) {
    return CATEGORY[index % CATEGORY.length];
  }

  function marker(shape, x, y, size, attrs) {
    const s = size;
    let node;
    if (shape === "square") node = el("rect", { x: x - s, y: y - s, width: 2 * s, height: 2 * s });
    else if (shape === "triangle") node = el("path", { d: `M${x},${y - s * 1.2}L${x + s * 1.1},${y + s * 0.8}L${x - s * 1.1},${y + s * 0.8}Z` });
    else if (shape === "triangle-down") node = el("path", { d: `M${x},${y + s * 1.2}L${x + s * 1.1},${y - s * 0.8}L${x - s * 1.1},${y - s * 0.8}Z` });
    else if (shape === "diamond") node = el("path", { d: `M${x},${y - s * 1.3}L${x + s * 1.3},${y}L${x},${y + s * 1.3}L${x - s * 1.3},${y}Z` });
    else if (shape === "cross") node = el("path", { d: `M${x - s},${y - s}L${x + s},${y + s}M${x - s},${y + s}L${x + s},${y - s}`, "stroke-width": 2 });
    else node = el("circle", { cx: x, cy: y, r: s });
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
    node.classList.add("mark");
    return node;
  }

  function hatchPattern(id, colour) {
    return el("pattern", { id: id, width: 6, height: 6, patternUnits: "userSpaceOnUse", patternTransform: "rotate(45)" }, [
      el("line", { x1: 0, y1: 0, x2: 0, y2: 6, stroke: colour, "stroke-width": 2 }),
    ]);
  }

  function yAxis(svg, scale, x, x2, digits) {
    const [lo, hi] = scale.domain;
    for (const tick of niceTicks(Math.min(lo, hi), Math.max(lo, hi), 5)) {
      const y = scale(tick);
      svg.appendChild(el("line", { x1: x, x2: x2, y1: y, y2: y, class: tick === 0 ? "zero" : "grid" }));
      svg.appendChild(text(x - 6, y + 4, fmt(tick, digits === undefined ? 2 : digits), { "text-anchor": "end", class: "tick" }));
    }
  }

  function xAxisTicks(svg, scale, y, y2, digits) {
    const [lo, hi] = scale.domain;
    for (const tick of niceTicks(Math.min(lo, hi), Math.max(lo, hi), 5)) {
      const x = scale(tick);
      svg.appendChild(el("line", { x1: x, x2: x, y1: y, y2: y2, class: tick === 0 ? "zero" : "grid" }));
      svg.appendChild(text(x, y2 + 16, fmt(tick, digits === undefined ? 2 : digits), { "text-anchor": "middle", class: "tick" }));
    }
  }

  function legend(items) {
    // items: [{label, colour, shape, hatch}] -> an HTML legend (wraps, readable, no hue alone).
    const list = document.createElement("ul");
    list.className = "legend";
    for (const item of items) {
      const entry = document.createElement("li");
      const swatch = svgRoot(16, 16, "");
      swatch.setAttribute("aria-hidden", "true");
      if (item.hatch) {
        const id = `legend-hatch-${++uid}`;
        swatch.appendChild(el("defs", {}, [hatchPattern(id, "#555")]));
        swatch.appendChild(el("rect", { x: 1, y: 1, width: 14, height: 14, fill: `url(#${id})`, stroke: "#555" }));
      } else if (item.shape) {
        swatch.appendChild(marker(item.shape, 8, 8, 4.5, { fill: item.colour, stroke: item.colour }));
      } else {
        swatch.appendChild(el("rect", { x: 1, y: 1, width: 14, height: 14, fill: item.colour, "fill-opacity": item.opacity || 1, stroke: "#777" }));
      }
      entry.appendChild(swatch);
      entry.appendChild(document.createTextNode(" " + item.label));
      list.appendChild(entry);
    }
    return list;
  }

  // Heatmap of a pairwise effect: colour = mean (diverging), opacity = certainty (low std is
  // solid, high std fades), hatching = no observation yet (the prior alone). Each cell is
  // focusable; onFocus(text) receives what the hover title says.
  function heatmap(opts) {
    const tasks = opts.tasks;
    const n = tasks.length;
    const cell = n <= 8 ? 58 : n <= 16 ? 34 : 20;
    const labelWidth = 8 + Math.min(150, 7 * Math.max(...tasks.map((t) => t.length)));
    const top = Math.round(labelWidth * 0.72) + 8;
    const width = labelWidth + n * cell + 10;
    const height = top + n * cell + 10;
    const svg = svgRoot(width, height, opts.label);
    const hatchId = `hatch-${++uid}`;
    svg.appendChild(el("defs", {}, [hatchPattern(hatchId, "rgba(60,60,60,0.45)")]));
    const stds = opts.std.flat().filter((v) => v !== null);
    const means = opts.mean.flat().filter((v) => v !== null);
    const maxStd = Math.max(...stds, 1e-9);
    const limit = Math.max(...means.map(Math.abs), 1e-9);
    for (let i = 0; i < n; i++) {
      svg.appendChild(text(labelWidth - 6, top + i * cell + cell / 2 + 4, tasks[i], { "text-anchor": "end", class: "task-label" }));
      const x = labelWidth + i * cell + cell / 2;
      svg.appendChild(text(x, top - 6, tasks[i], { transform: `rotate(-45 ${x} ${top - 6})`, class: "task-label" }));
    }
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < n; j++) {
        const x = labelWidth + j * cell;
        const y = top + i * cell;
        const mean = opts.mean[i][j];
        if (mean === null) {
          svg.appendChild(el("rect", { x: x, y: y, width: cell, height: cell, class: "diagonal" }));
          continue;
        }
        const std = opts.std[i][j];
        const count = opts.count[i][j];
        const certainty = 1 - std / maxStd;
        const source = count > 0 ? `${count} observation${count === 1 ? "" : "s"}` : "prior only";
        const description = `${opts.effect}: ${tasks[i]} on ${tasks[j]}: ${fmt(mean)} ± ${fmt(std)} (${source})`;
        const group = el("g", { class: "cell", tabindex: 0, "aria-label": description, "data-count": count }, [title(description)]);
        group.appendChild(el("rect", { x: x + 1, y: y + 1, width: cell - 2, height: cell - 2, fill: diverging(mean, limit), "fill-opacity": (0.25 + 0.75 * certainty).toFixed(3), class: "mark" }));
        if (count === 0) group.appendChild(el("rect", { x: x + 1, y: y + 1, width: cell - 2, height: cell - 2, fill: `url(#${hatchId})` }));
        if (cell >= 34) {
          group.appendChild(text(x + cell / 2, y + cell / 2 + (cell >= 50 ? 0 : 4), fmt(mean, 2), { "text-anchor": "middle", class: "cell-value" }));
          if (cell >= 50) group.appendChild(text(x + cell / 2, y + cell / 2 + 14, count > 0 ? `n=${count}` : "prior", { "text-anchor": "middle", class: "cell-count" }));
        }
        if (opts.onFocus) {
          group.addEventListener("focus", () => opts.onFocus(description));
          group.addEventListener("mouseenter", () => opts.onFocus(description));
        }
        svg.appendChild(group);
      }
    }
    const wrap = document.createElement("div");
    wrap.appendChild(svg);
    wrap.appendChild(
      legend([
        { label: `blue: positive (up to ${fmt(limit, 2)})`, colour: diverging(limit, limit) },
        { label: "orange: negative (forgetting, for B)", colour: diverging(-limit, limit) },
        { label: `faded: uncertain (std up to ${fmt(maxStd, 2)})`, colour: diverging(limit, limit), opacity: 0.3 },
        { label: "hatched: no observation yet (prior)", hatch: true },
      ])
    );
    return wrap;
  }

  // Horizontal bars of a per-task effect with 95 % whiskers; hatched bars have no observation.
  function effectBars(opts) {
    const rows = opts.rows; // [{task, kind, mean, std, count}]
    const labelWidth = 8 + Math.min(190, 7 * Math.max(...rows.map((r) => (r.task + r.kind).length + 3)));
    const rowHeight = 22;
    const width = labelWidth + 260;
    const height = rows.length * rowHeight + 34;
    const svg = svgRoot(width, height, opts.label);
    const hatchId = `hatch-${++uid}`;
    svg.appendChild(el("defs", {}, [hatchPattern(hatchId, "rgba(255,255,255,0.7)")]));
    const lows = rows.map((r) => r.mean - 1.96 * r.std);
    const highs = rows.map((r) => r.mean + 1.96 * r.std);
    const [lo, hi] = extent(lows.concat(highs, [0]), 0.02);
    const x = linear([lo, hi], [labelWidth, width - 12]);
    const bottom = rows.length * rowHeight + 6;
    xAxisTicks(svg, x, 6, bottom, 2);
    rows.forEach((row, i) => {
      const y = 6 + i * rowHeight;
      svg.appendChild(text(labelWidth - 6, y + rowHeight / 2 + 4, `${row.task} · ${row.kind}`, { "text-anchor": "end", class: "task-label" }));
      const x0 = x(Math.min(0, row.mean));
      const x1 = x(Math.max(0, row.mean));
      const colour = row.mean >= 0 ? "rgb(33,102,172)" : "rgb(230,97,1)";
      const source = row.count > 0 ? `${row.count} observation${row.count === 1 ? "" : "s"}` : "prior only";
      const description = `${opts.effect} of ${row.task} (${row.kind}): ${fmt(row.mean)} ± ${fmt(row.std)} (${source})`;
      const group = el("g", { class: "bar", tabindex: 0, "aria-label": description }, [title(description)]);
      group.appendChild(el("rect", { x: x0, y: y + 4, width: Math.max(1, x1 - x0), height: rowHeight - 8, fill: colour, class: "mark" }));
      if (row.count === 0) group.appendChild(el("rect", { x: x0, y: y + 4, width: Math.max(1, x1 - x0), height: rowHeight - 8, fill: `url(#${hatchId})` }));
      const w0 = x(row.mean - 1.96 * row.std);
      const w1 = x(row.mean + 1.96 * row.std);
      const cy = y + rowHeight / 2;
      group.appendChild(el("path", { d: `M${w0},${cy}H${w1}M${w0},${cy - 5}V${cy + 5}M${w1},${cy - 5}V${cy + 5}`, class: "whisker" }));
      svg.appendChild(group);
    });
    return svg;
  }

  // Dots with 95 % intervals, one row per task; several series are dodged vertically.
  function intervalPlot(opts) {
    const series = opts.series; // [{name, points: [{task, mean, lower, upper}]}]
    const tasks = opts.tasks;
    const labelWidth = 8 + Math.min(150, 7 * Math.max(...tasks.map((t) => t.length)));
    const rowHeight = 14 + 10 * series.length;
    const width = labelWidth + (opts.width || 340);
    const height = tasks.length * rowHeight + 34;
    const svg = svgRoot(width, height, opts.label);
    const values = series.flatMap((s) => s.points.flatMap((p) => [p.lower, p.upper].concat(p.observed === undefined ? [] : [p.observed])));
    const x = linear(extent(values), [labelWidth, width - 12]);
    const bottom = tasks.length * rowHeight + 6;
    xAxisTicks(svg, x, 6, bottom, 2);
    tasks.forEach((task, i) => {
      const y = 6 + i * rowHeight;
      svg.appendChild(text(labelWidth - 6, y + rowHeight / 2 + 4, task, { "text-anchor": "end", class: "task-label" }));
      series.forEach((s, k) => {
        const point = s.points.find((p) => p.task === task);
        if (!point) return;
        const cy = y + 12 + k * 10;
        const colour = s.colour || category(k);
        const description = `${s.name}: ${task} ${fmt(point.mean)} (95 % ${fmt(point.lower)} to ${fmt(point.upper)})`;
        const group = el("g", { class: "interval", tabindex: 0, "aria-label": description }, [title(description)]);
        group.appendChild(el("line", { x1: x(point.lower), x2: x(point.upper), y1: cy, y2: cy, stroke: colour, "stroke-width": 2 }));
        group.appendChild(marker(s.shape || SHAPES[k], x(point.mean), cy, 4, { fill: colour, stroke: colour }));
        svg.appendChild(group);
      });
    });
    return svg;
  }

  // Lines over stages (x: integer stages), one per series, each with its own marker shape.
  function lineChart(opts) {
    const series = opts.series; // [{name, points: [{x, y}]}]
    const width = opts.width || 620;
    const height = opts.height || 280;
    const margin = { left: 52, right: 16, top: 12, bottom: opts.xLabelLines === 2 ? 56 : 44 };
    const svg = svgRoot(width, height, opts.label);
    const xs = series.flatMap((s) => s.points.map((p) => p.x));
    const ys = series.flatMap((s) => s.points.flatMap((p) => (p.band ? [p.y, p.band[0], p.band[1]] : [p.y])));
    const xDomain = opts.xDomain || extent(xs, 0);
    const x = linear(xDomain, [margin.left, width - margin.right]);
    const y = linear(extent(ys, 0.08), [height - margin.bottom, margin.top]);
    yAxis(svg, y, margin.left, width - margin.right, opts.yDigits);
    for (let stage = Math.ceil(xDomain[0]); stage <= xDomain[1]; stage++) {
      const lines = opts.xLabels ? opts.xLabels(stage) : [String(stage)];
      lines.forEach((line, k) => svg.appendChild(text(x(stage), height - margin.bottom + 16 + 13 * k, line, { "text-anchor": "middle", class: k ? "tick tick-sub" : "tick" })));
    }
    if (opts.xTitle) svg.appendChild(text((margin.left + width - margin.right) / 2, height - 8, opts.xTitle, { "text-anchor": "middle", class: "axis-title" }));
    if (opts.yTitle) svg.appendChild(text(12, (margin.top + height - margin.bottom) / 2, opts.yTitle, { "text-anchor": "middle", transform: `rotate(-90 12 ${(margin.top + height - margin.bottom) / 2})`, class: "axis-title" }));
    series.forEach((s, k) => {
      const colour = s.colour || category(k);
      const shape = s.shape || SHAPES[k % SHAPES.length];
      const banded = s.points.filter((p) => p.band);
      if (banded.length > 1) {
        const upper = banded.map((p) => `${x(p.x)},${y(p.band[1])}`);
        const lower = banded.map((p) => `${x(p.x)},${y(p.band[0])}`).reverse();
        svg.appendChild(el("polygon", { points: upper.concat(lower).join(" "), fill: colour, "fill-opacity": 0.15, stroke: "none" }));
      }
      if (s.points.length > 1) {
        // A step series holds its value until the next point (the best run so far).
        const d = s.points
          .map((p, i) => {
            if (i === 0) return `M${x(p.x)},${y(p.y)}`;
            return s.step ? `H${x(p.x)}V${y(p.y)}` : `L${x(p.x)},${y(p.y)}`;
          })
          .join("");
        svg.appendChild(el("path", { d: d, fill: "none", stroke: colour, "stroke-width": 2, "stroke-dasharray": s.dashed ? "6 4" : null, class: "series-line" }));
      }
      for (const p of s.points) {
        const description = `${s.name}: ${opts.pointLabel ? opts.pointLabel(p) : "x " + p.x}, ${fmt(p.y)}`;
        const group = el("g", { class: "point", "data-series": s.name }, [title(description)]);
        group.appendChild(marker(shape, x(p.x), y(p.y), 4, { fill: colour, stroke: colour }));
        svg.appendChild(group);
      }
    });
    const wrap = document.createElement("div");
    wrap.appendChild(svg);
    wrap.appendChild(legend(series.map((s, k) => ({ label: s.name, colour: s.colour || category(k), shape: s.shape || SHAPES[k % SHAPES.length] }))));
    return wrap;
  }

  // Predicted (x) against realized (y) with the diagonal; whiskers: the predicted 95 % interval
  // of the realized value; a filled dot fell inside it, a cross outside.
  function calibration(opts) {
    const points = opts.points; // [{label, predicted, observed, lower, upper, inside}]
    const size = opts.size || 420;
    const margin = 52;
    const svg = svgRoot(size + 16, size + 8, opts.label);
    const values = points.flatMap((p) => [p.predicted, p.observed, p.lower, p.upper]).filter((v) => v !== null && v !== undefined);
    const domain = extent(values, 0.06);
    const x = linear(domain, [margin, size]);
    const y = linear(domain, [size - margin + 12, 12]);
    yAxis(svg, y, margin, size, 2);
    for (const tick of niceTicks(domain[0], domain[1], 5)) {
      svg.appendChild(text(x(tick), size - margin + 28, fmt(tick, 2), { "text-anchor": "middle", class: "tick" }));
    }
    svg.appendChild(el("line", { x1: x(domain[0]), y1: y(domain[0]), x2: x(domain[1]), y2: y(domain[1]), class: "diagonal-line" }));
    svg.appendChild(text(size / 2 + 20, size - 4, "predicted final utility", { "text-anchor": "middle", class: "axis-title" }));
    svg.appendChild(text(12, size / 2 - 20, "realized final utility", { "text-anchor": "middle", transform: `rotate(-90 12 ${size / 2 - 20})`, class: "axis-title" }));
    for (const p of points) {
      if (p.predicted === null || p.predicted === undefined) continue;
      const colour = opts.colour ? opts.colour(p) : category(0);
      const description = `${p.label}: predicted ${fmt(p.predicted)}, realized ${fmt(p.observed)}${p.lower !== undefined ? `, 95 % ${fmt(p.lower)} to ${fmt(p.upper)}` : ""}${p.inside === false ? " (outside)" : ""}`;
      const group = el("g", { class: "calibration-point", tabindex: 0, "aria-label": description }, [title(description)]);
      if (p.lower !== undefined && p.lower !== null) {
        group.appendChild(el("line", { x1: x(p.predicted), x2: x(p.predicted), y1: y(p.lower), y2: y(p.upper), stroke: colour, "stroke-opacity": 0.45, "stroke-width": 1.5 }));
      }
      group.appendChild(marker(p.inside === false ? "cross" : "circle", x(p.predicted), y(p.observed), 4, { fill: colour, stroke: colour }));
      svg.appendChild(group);
    }
    return svg;
  }

  // Two orders side by side; a line joins each task's two stages; tasks that moved are drawn
  // thick and labelled with the move.
  function orderDiff(opts) {
    const a = opts.a; // {name, order}
    const b = opts.b;
    const tasks = Array.from(new Set(a.order.concat(b.order)));
    const labelWidth = 8 + Math.min(170, 7.5 * Math.max(...tasks.map((t) => t.length)) + 28);
    const rowHeight = 24;
    const gap = 150;
    const width = 2 * labelWidth + gap + 20;
    const height = 30 + Math.max(a.order.length, b.order.length) * rowHeight;
    const svg = svgRoot(width, height, opts.label);
    svg.appendChild(text(labelWidth - 6, 16, a.name, { "text-anchor": "end", class: "axis-title" }));
    svg.appendChild(text(labelWidth + gap + 6, 16, b.name, { class: "axis-title" }));
    const row = (i) => 30 + i * rowHeight + rowHeight / 2;
    a.order.forEach((task, i) => svg.appendChild(text(labelWidth - 6, row(i) + 4, `${i + 1}. ${task}`, { "text-anchor": "end", class: "task-label" })));
    b.order.forEach((task, i) => svg.appendChild(text(labelWidth + gap + 6, row(i) + 4, `${i + 1}. ${task}`, { class: "task-label" })));
    tasks.forEach((task, k) => {
      const i = a.order.indexOf(task);
      const j = b.order.indexOf(task);
      if (i < 0 || j < 0) return;
      const moved = j - i;
      const description = moved === 0 ? `${task}: stage ${i + 1} in both` : `${task}: stage ${i + 1} to ${j + 1} (${moved > 0 ? "later" : "earlier"} by ${Math.abs(moved)})`;
      const group = el("g", { class: moved === 0 ? "link" : "link moved", "data-task": task }, [title(description)]);
      group.appendChild(el("line", { x1: labelWidth, y1: row(i), x2: labelWidth + gap, y2: row(j), stroke: moved === 0 ? "#9a9a9a" : moved > 0 ? "rgb(230,97,1)" : "rgb(33,102,172)", "stroke-width": moved === 0 ? 1.5 : 3.5, "stroke-dasharray": moved > 0 ? "7 3" : null, class: "mark" }));
      group.appendChild(el("circle", { cx: labelWidth, cy: row(i), r: 3, fill: "#444" }));
      group.appendChild(el("circle", { cx: labelWidth + gap, cy: row(j), r: 3, fill: "#444" }));
      svg.appendChild(group);
    });
    return svg;
  }

  // The schedule history: objective per version, the proven bound above it (the gap as a
  // segment), parent links as arcs; each point links to its schedule.
  function timeline(opts) {
    const items = opts.items; // [{version, objective, bound, parentVersion, replan, href, description}]
    const width = Math.max(420, Math.min(900, 70 + items.length * 46));
    const height = 240;
    const margin = { left: 56, right: 20, top: 16, bottom: 40 };
    const svg = svgRoot(width, height, opts.label);
    const versions = items.map((s) => s.version);
    const x = linear(extent(versions, 0.04), [margin.left, width - margin.right]);
    const ys = items.flatMap((s) => (s.bound === null ? [s.objective] : [s.objective, s.bound]));
    const y = linear(extent(ys, 0.1), [height - margin.bottom, margin.top]);
    yAxis(svg, y, margin.left, width - margin.right, 2);
    const byVersion = new Map(items.map((s) => [s.version, s]));
    for (const s of items) {
      svg.appendChild(text(x(s.version), height - margin.bottom + 16, `v${s.version}`, { "text-anchor": "middle", class: "tick" }));
      const parent = s.parentVersion === null ? undefined : byVersion.get(s.parentVersion);
      if (parent) {
        const x0 = x(parent.version);
        const x1 = x(s.version);
        const lift = height - margin.bottom - 4;
        svg.appendChild(el("path", { d: `M${x0},${lift}Q${(x0 + x1) / 2},${lift - 30} ${x1},${lift}`, class: "parent-arc" }, [title(`v${s.version} re-plans v${parent.version}`)]));
      }
    }
    svg.appendChild(text((margin.left + width - margin.right) / 2, height - 6, "schedule version", { "text-anchor": "middle", class: "axis-title" }));
    svg.appendChild(text(12, (margin.top + height - margin.bottom) / 2, "objective", { "text-anchor": "middle", transform: `rotate(-90 12 ${(margin.top + height - margin.bottom) / 2})`, class: "axis-title" }));
    for (const s of items) {
      const link = el("a", { href: s.href, class: "timeline-point", "aria-label": s.description }, [title(s.description)]);
      if (s.bound !== null) {
        link.appendChild(el("line", { x1: x(s.version), x2: x(s.version), y1: y(s.objective), y2: y(s.bound), class: "gap-line" }));
        link.appendChild(marker("triangle-down", x(s.version), y(s.bound), 4, { fill: "white", stroke: "rgb(33,102,172)" }));
      }
      link.appendChild(marker(s.replan ? "diamond" : "circle", x(s.version), y(s.objective), 5.5, { fill: s.replan ? "rgb(230,97,1)" : "rgb(33,102,172)", stroke: s.selected ? "#000" : "none", "stroke-width": 2 }));
      svg.appendChild(link);
    }
    const wrap = document.createElement("div");
    wrap.appendChild(svg);
    wrap.appendChild(
      legend([
        { label: "a recommendation or a run's first plan", colour: "rgb(33,102,172)", shape: "circle" },
        { label: "a run's re-plan (arc: from its parent)", colour: "rgb(230,97,1)", shape: "diamond" },
        { label: "proven bound (segment: the gap)", colour: "rgb(33,102,172)", shape: "triangle-down" },
      ])
    );
    return wrap;
  }

  // A horizontal stacked bar of counts (runs by status).
  function stackedBar(opts) {
    const parts = opts.parts.filter((p) => p.count > 0); // [{label, count, colour}]
    const total = parts.reduce((sum, p) => sum + p.count, 0);
    const width = opts.width || 420;
    const svg = svgRoot(width, 28, opts.label);
    let offset = 0;
    const hatchId = `hatch-${++uid}`;
    svg.appendChild(el("defs", {}, [hatchPattern(hatchId, "rgba(255,255,255,0.6)")]));
    for (const part of parts) {
      const w = (part.count / Math.max(total, 1)) * width;
      const group = el("g", { class: "segment" }, [title(`${part.label}: ${part.count}`)]);
      group.appendChild(el("rect", { x: offset, y: 2, width: w, height: 24, fill: part.colour, class: "mark" }));
      if (part.hatch) group.appendChild(el("rect", { x: offset, y: 2, width: w, height: 24, fill: `url(#${hatchId})` }));
      if (w > 60) group.appendChild(text(offset + 6, 19, `${part.label} ${part.count}`, { class: "segment-label" }));
      svg.appendChild(group);
      offset += w;
    }
    return svg;
  }

  window.OrdoCharts = {
    calibration,
    category,
    diverging,
    effectBars,
    fmt,
    heatmap,
    intervalPlot,
    legend,
    lineChart,
    orderDiff,
    SHAPES,
    stackedBar,
    timeline,
  };
})();
