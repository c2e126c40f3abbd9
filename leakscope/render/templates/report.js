/* leakscope report: builds the page from the JSON data block.
 *
 * Every string from the run reaches the page through textContent or
 * createTextNode (via el/text below), never through HTML parsing, and no
 * link or URL is ever made from run data. Written by hand, no build step.
 */
(function () {
  "use strict";

  var SVG_NS = "http://www.w3.org/2000/svg";
  var data = JSON.parse(document.getElementById("leakscope-data").textContent);
  var meta = data.meta;
  var unit = meta.unit;
  var short = meta.unit_short;

  // ------------------------------------------------------------------ helpers

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function add(parent) {
    for (var i = 1; i < arguments.length; i++) {
      var child = arguments[i];
      if (child === null || child === undefined) continue;
      parent.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    }
    return parent;
  }

  function svg(tag, attrs) {
    var node = document.createElementNS(SVG_NS, tag);
    for (var key in attrs) {
      if (Object.prototype.hasOwnProperty.call(attrs, key)) node.setAttribute(key, attrs[key]);
    }
    return node;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  function plural(count, word) {
    return grouped(count) + " " + word + (count === 1 ? "" : "s");
  }

  function grouped(value) {
    return Math.round(value).toLocaleString("en-US");
  }

  // The same figures as leakscope.units.format_bytes, so page and terminal agree.
  function formatBytes(value, signed) {
    if (value === null || value === undefined) return "-";
    var sign = value < 0 ? "-" : (signed && value > 0 ? "+" : "");
    var size = Math.abs(value);
    var units = ["B", "KiB", "MiB", "GiB"];
    for (var i = 0; i < units.length; i++) {
      if (size < 1024 || i === units.length - 1) {
        if (i === 0) {
          return sign + (size >= 10 || size === Math.floor(size) ? grouped(size) : size.toFixed(1)) + " B";
        }
        return sign + (size < 100 ? String(parseFloat(size.toPrecision(3))) : grouped(size)) + " " + units[i];
      }
      size /= 1024;
    }
    return sign + grouped(size) + " GiB";
  }

  function blocks(count) {
    var sign = count > 0 ? "+" : "";
    return sign + grouped(count) + " block" + (Math.abs(count) === 1 ? "" : "s");
  }

  function location(file, line) {
    return file + ":" + line;
  }

  // Nice axis ticks over [lo, hi]: 1, 2, 2.5 or 5 times a power of ten (bytes read fine that way).
  function ticks(lo, hi, count) {
    if (!(hi > lo)) {
      var pad = Math.max(1, Math.abs(lo) * 0.05);
      lo -= pad;
      hi += pad;
    }
    var raw = (hi - lo) / count;
    var power = Math.pow(10, Math.floor(Math.log10(raw)));
    var steps = [1, 2, 2.5, 5, 10];
    var step = power;
    for (var i = 0; i < steps.length; i++) {
      if (steps[i] * power >= raw) { step = steps[i] * power; break; }
    }
    var start = Math.floor(lo / step) * step;
    var end = Math.ceil(hi / step) * step;
    var out = [];
    for (var v = start; v <= end + step / 2; v += step) out.push(v);
    return { lo: start, hi: end, step: step, values: out };
  }

  function byteUnit(top) {
    var scale = 1;
    for (var k = 0; k < 3 && top >= scale * 1024; k++) scale *= 1024;
    return scale;
  }

  // Axis labels: one unit for the whole axis and enough decimals that ticks differ.
  function axisBytes(value, step, scale) {
    var units = { 1: "B", 1024: "KiB", 1048576: "MiB", 1073741824: "GiB" };
    var decimals = Math.max(0, Math.min(3, Math.ceil(-Math.log10(step / scale) - 1e-9)));
    var sign = value < 0 ? "-" : "";
    return sign + (Math.abs(value) / scale).toFixed(decimals) + " " + units[scale];
  }

  function axisCount(value, step) {
    var decimals = step >= 1 ? 0 : Math.min(3, Math.ceil(-Math.log10(step) - 1e-9));
    return decimals ? value.toFixed(decimals) : grouped(value);
  }

  function nearest(sorted, value) {
    var lo = 0, hi = sorted.length - 1;
    if (hi < 0) return -1;
    while (lo < hi) {
      var mid = (lo + hi) >> 1;
      if (sorted[mid] < value) lo = mid + 1; else hi = mid;
    }
    if (lo > 0 && Math.abs(sorted[lo - 1] - value) <= Math.abs(sorted[lo] - value)) return lo - 1;
    return lo;
  }

  function sparkline(values, width, height, cls) {
    var node = svg("svg", {
      "class": "spark " + (cls || ""), viewBox: "0 0 " + width + " " + height,
      width: width, height: height, "aria-hidden": "true"
    });
    var points = [];
    for (var i = 0; i < values.length; i++) if (values[i] !== null) points.push([i, values[i]]);
    if (points.length < 2) {
      add(node, svg("line", { x1: 0, x2: width, y1: height - 2, y2: height - 2, "class": "spark-empty" }));
      return node;
    }
    var min = Infinity, max = -Infinity;
    points.forEach(function (p) { min = Math.min(min, p[1]); max = Math.max(max, p[1]); });
    var span = max > min ? max - min : 1;
    var last = values.length - 1 || 1;
    var xy = points.map(function (p) {
      return [(p[0] / last) * (width - 4) + 2, height - 3 - ((p[1] - min) / span) * (height - 6)];
    });
    var line = "M" + xy.map(function (p) { return p[0].toFixed(1) + " " + p[1].toFixed(1); }).join("L");
    var area = line + "L" + xy[xy.length - 1][0].toFixed(1) + " " + height + "L" + xy[0][0].toFixed(1) + " " + height + "Z";
    add(node, svg("path", { d: area, "class": "spark-area" }), svg("path", { d: line, "class": "spark-line" }));
    var end = xy[xy.length - 1];
    add(node, svg("circle", { cx: end[0], cy: end[1], r: 2.2, "class": "spark-dot" }));
    return node;
  }

  Array.prototype.forEach.call(document.querySelectorAll("[data-unit]"), function (node) {
    node.textContent = unit;
  });

  // -------------------------------------------------------------- header, verdict

  function header() {
    document.title = "leakscope · " + (data.verdict ? (data.verdict.leak ? "LEAK" : "no leak") : "no verdict") + " · " + meta.target;
    var line = document.getElementById("run-line");
    add(line, el("code", "target", meta.target),
      el("span", "dot-sep", "Python " + meta.python),
      el("span", "dot-sep", meta.started_at));
    add(document.getElementById("foot"),
      "Generated by leakscope " + meta.version + " · self-contained: this page fetches nothing.");
  }

  function chip(label, value, cls) {
    var node = el("div", "chip" + (cls ? " " + cls : ""));
    add(node, el("span", "chip-label", label), el("span", "chip-value", value));
    return node;
  }

  function verdict() {
    var box = document.getElementById("verdict");
    var v = data.verdict;
    if (!v) {
      box.classList.add("none");
      add(box, el("div", "verdict-status", "NO VERDICT"),
        el("p", "summary", "This run has no verdict: it was saved before analysis."));
      return;
    }
    box.classList.add(v.leak ? "leak" : "ok", "kind-" + v.kind);
    var top = el("div", "verdict-top");
    add(top, el("span", "verdict-status", v.leak ? "LEAK" : (v.undecided ? "UNDECIDED" : "NO LEAK")), el("span", "verdict-title", v.title));
    if (v.partial) add(top, el("span", "badge warn", "partial run"));
    var facts = el("div", "chips");
    add(facts,
      chip("kind", v.kind),
      chip("rate", v.rate, v.leak ? "strong" : ""),
      chip("blocks", v.blocks),
      chip("confidence", v.confidence),
      chip("measured", plural(meta.measured, unit) + " + " + grouped(meta.warmup) + " warm-up"),
      chip("mode", meta.mode === "fast" ? "fast (" + grouped(meta.traced) + " traced)" : meta.mode));
    if (v.memory_limit) add(facts, chip("memory limit", v.memory_limit));
    add(box, top, el("p", "summary", v.summary), facts);
    if (v.projection) {
      var projection = el("p", "projection");
      add(projection, el("span", "projection-label", "Projection"), el("span", null, v.projection));
      add(box, projection);
    }
    if (v.evidence.length) {
      var details = el("details", "evidence");
      add(details, el("summary", null, "Evidence the verdict rests on"));
      var table = el("table", "kv compact");
      v.evidence.forEach(function (row) {
        var tr = el("tr");
        add(tr, el("th", null, row[0]), el("td", null, row[1]));
        add(table, tr);
      });
      add(box, add(details, table));
    }
  }

  // -------------------------------------------------------------------- chart

  var chart = data.chart;
  var loops = data.loops;
  var selectLoop = function () {};

  function legend() {
    var box = document.getElementById("chart-legend");
    function item(cls, label) {
      var node = el("span", "legend-item");
      add(node, el("span", "swatch " + cls), label);
      return node;
    }
    var names = {
      traced: "traced bytes kept since warm-up", blocks: "allocated blocks",
      malloc: "malloc in use", rss: "RSS"
    };
    chart.panels.forEach(function (panel) { add(box, item(panel.key, names[panel.key] || panel.title)); });
    if (chart.fit) add(box, item("fit", "fitted growth " + chart.fit.label));
    if (chart.warmup) add(box, item("warm", "warm-up"));
    if (chart.traced_range) add(box, item("traced-band", "traced to locate"));
    var note = document.getElementById("chart-note");
    var text = plural(chart.loops, unit) + " in the run";
    if (chart.traced_range) {
      text += "; fast mode decided on the cheap counters of the untraced " + unit + "s, " +
        "then traced " + unit + "s " + grouped(chart.traced_range[0]) + "–" + grouped(chart.traced_range[1]) +
        " to locate the growth (their lines are in the per-" + unit + " view)";
    }
    if (chart.thinned) text += "; the chart keeps " + grouped(chart.x.length) + " points, each bucket's lowest and highest";
    note.textContent = text + ". Hover for figures, click to open that " + unit + " below.";
  }

  function drawChart() {
    var node = document.getElementById("memory-chart");
    var wrap = document.getElementById("chart-wrap");
    var tip = document.getElementById("chart-tip");
    clear(node);
    var width = Math.max(360, Math.round(wrap.clientWidth || 900));
    var left = 76, right = 18;
    // The first panel is the series the verdict read, the others smaller under it.
    var top = 22;
    var panels = chart.panels.map(function (spec, k) {
      var panel = { key: spec.key, title: spec.title, format: spec.format, top: top, height: k ? 110 : 200 };
      top += panel.height + 40;
      return panel;
    });
    var last = panels[panels.length - 1];
    var height = last.top + last.height + 30;
    node.setAttribute("viewBox", "0 0 " + width + " " + height);
    node.setAttribute("width", width);
    node.setAttribute("height", height);
    var xs = chart.x;
    if (!xs.length) {
      add(node, add(svg("text", { x: width / 2, y: height / 2, "class": "empty-text", "text-anchor": "middle" }), "No loops recorded."));
      return;
    }
    var x0 = xs[0], x1 = xs[xs.length - 1] > x0 ? xs[xs.length - 1] : x0 + 1;
    var plotWidth = width - left - right;
    function sx(x) { return left + ((x - x0) / (x1 - x0)) * plotWidth; }

    panels.forEach(function (panel) {
      var values = chart[panel.key];
      var lo = Infinity, hi = -Infinity;
      values.forEach(function (v) { if (v !== null) { lo = Math.min(lo, v); hi = Math.max(hi, v); } });
      if (chart.fit && chart.fit.series === panel.key) {
        [chart.fit.y0, chart.fit.y1].forEach(function (v) { if (v !== null) { lo = Math.min(lo, v); hi = Math.max(hi, v); } });
      }
      var g = svg("g", { "class": "panel panel-" + panel.key });
      add(node, g);
      add(g, add(svg("text", { x: left, y: panel.top - 8, "class": "panel-title" }), panel.title));
      if (lo === Infinity) {
        add(g, svg("rect", { x: left, y: panel.top, width: plotWidth, height: panel.height, "class": "plot-bg" }));
        add(g, add(svg("text", { x: left + plotWidth / 2, y: panel.top + panel.height / 2, "class": "empty-text", "text-anchor": "middle" }),
          "not recorded in this run"));
        panel.sy = null;
        return;
      }
      if (panel.key === "traced") lo = Math.min(lo, 0);
      // Ticks are nice numbers of the unit the axis is labelled in (0.05 MiB, not 52,429 B).
      var unitSize = panel.format === "bytes" ? byteUnit(Math.max(Math.abs(lo), Math.abs(hi))) : 1;
      var scale = ticks(lo / unitSize, hi / unitSize, panel.height > 150 ? 5 : 3);
      scale.lo *= unitSize;
      scale.hi *= unitSize;
      scale.step *= unitSize;
      scale.values = scale.values.map(function (v) { return v * unitSize; });
      function sy(v) { return panel.top + panel.height - ((v - scale.lo) / (scale.hi - scale.lo)) * panel.height; }
      panel.sy = sy;
      add(g, svg("rect", { x: left, y: panel.top, width: plotWidth, height: panel.height, "class": "plot-bg" }));
      if (chart.warmup) {
        var wx0 = sx(chart.warmup[0]);
        var wx1 = chart.first_measured !== null ? sx(chart.first_measured) : sx(chart.warmup[1]);
        add(g, svg("rect", { x: wx0, y: panel.top, width: Math.max(2, wx1 - wx0), height: panel.height, "class": "warmup" }));
        if (panel.key === "traced" && wx1 - wx0 > 46) {
          add(g, add(svg("text", { x: wx0 + 5, y: panel.top + 14, "class": "warmup-label" }), "warm-up"));
        }
      }
      if (chart.traced_range) {
        var tx0 = sx(chart.traced_range[0]), tx1 = sx(chart.traced_range[1]);
        add(g, svg("rect", { x: tx0, y: panel.top, width: Math.max(2, tx1 - tx0), height: panel.height, "class": "traced-band" }));
      }
      scale.values.forEach(function (v) {
        var y = sy(v);
        add(g, svg("line", { x1: left, x2: left + plotWidth, y1: y, y2: y, "class": "grid" }));
        add(g, add(svg("text", { x: left - 8, y: y + 4, "class": "axis-label", "text-anchor": "end" }),
          panel.format === "bytes" ? axisBytes(v, scale.step, unitSize) : axisCount(v, scale.step)));
      });
      var d = "", pen = false;
      for (var i = 0; i < xs.length; i++) {
        var v = values[i];
        if (v === null) { pen = false; continue; }
        d += (pen ? "L" : "M") + sx(xs[i]).toFixed(1) + " " + sy(v).toFixed(1);
        pen = true;
      }
      add(g, svg("path", { d: d, "class": "series series-" + panel.key }));
      if (chart.fit && chart.fit.series === panel.key && chart.fit.y0 !== null && chart.fit.y1 !== null) {
        var fx = sx(chart.fit.x1), fy = sy(chart.fit.y1);
        add(g, svg("line", { x1: sx(chart.fit.x0), y1: sy(chart.fit.y0), x2: fx, y2: fy, "class": "fit" }));
        add(g, add(svg("text", { x: fx - 4, y: Math.max(panel.top + 12, fy - 8), "class": "fit-label", "text-anchor": "end" }),
          "fit " + chart.fit.label));
      }
    });

    // x axis under the lower panel
    var bottom = last.top + last.height;
    var xticks = ticks(x0, x1, Math.max(2, Math.floor(plotWidth / 110)));
    xticks.values.forEach(function (v) {
      if (v < x0 || v > x1 || v !== Math.floor(v)) return;
      add(node, svg("line", { x1: sx(v), x2: sx(v), y1: bottom, y2: bottom + 4, "class": "tick" }));
      add(node, add(svg("text", { x: sx(v), y: bottom + 17, "class": "axis-label", "text-anchor": "middle" }), grouped(v)));
    });
    add(node, add(svg("text", { x: left + plotWidth, y: height - 1, "class": "axis-title", "text-anchor": "end" }), unit));

    // hover crosshair, tooltip and the selected loop's marker
    var cross = svg("line", { y1: panels[0].top, y2: bottom, "class": "crosshair", visibility: "hidden" });
    var marker = svg("line", { y1: panels[0].top, y2: bottom, "class": "selected", visibility: "hidden" });
    var dots = panels.map(function () { return svg("circle", { r: 3.5, "class": "hover-dot", visibility: "hidden" }); });
    add(node, marker, cross);
    dots.forEach(function (dot) { add(node, dot); });
    var overlay = svg("rect", { x: left, y: panels[0].top, width: plotWidth, height: bottom - panels[0].top, "class": "overlay" });
    add(node, overlay);

    function pointAt(event) {
      var box = node.getBoundingClientRect();
      var px = ((event.clientX - box.left) / box.width) * width;
      return { px: px, x: x0 + ((px - left) / plotWidth) * (x1 - x0) };
    }
    overlay.addEventListener("mousemove", function (event) {
      var at = pointAt(event);
      var i = nearest(xs, at.x);
      var x = sx(xs[i]);
      cross.setAttribute("x1", x);
      cross.setAttribute("x2", x);
      cross.setAttribute("visibility", "visible");
      clear(tip);
      add(tip, el("strong", null, unit + " " + grouped(xs[i])));
      panels.forEach(function (panel, k) {
        var v = chart[panel.key][i];
        if (v === null || !panel.sy) { dots[k].setAttribute("visibility", "hidden"); return; }
        dots[k].setAttribute("cx", x);
        dots[k].setAttribute("cy", panel.sy(v));
        dots[k].setAttribute("visibility", "visible");
        add(tip, el("div", "tip-" + panel.key, panel.title + " " + (panel.format === "bytes" ? formatBytes(v) : grouped(v))));
      });
      if (chart.first_measured !== null && xs[i] < chart.first_measured) add(tip, el("div", "tip-muted", "warm-up (untraced)"));
      tip.hidden = false;
      var box = node.getBoundingClientRect();
      var left_px = (x / width) * box.width;
      tip.style.left = Math.min(box.width - tip.offsetWidth - 4, left_px + 12) + "px";
      tip.style.top = "8px";
    });
    overlay.addEventListener("mouseleave", function () {
      cross.setAttribute("visibility", "hidden");
      dots.forEach(function (dot) { dot.setAttribute("visibility", "hidden"); });
      tip.hidden = true;
    });
    overlay.addEventListener("click", function (event) {
      var at = pointAt(event);
      var pos = nearest(loops.index, at.x);
      if (pos >= 0) selectLoop(pos, true);
    });
    chart.mark = function (index) {
      if (index === null || index < x0 || index > x1) { marker.setAttribute("visibility", "hidden"); return; }
      marker.setAttribute("x1", sx(index));
      marker.setAttribute("x2", sx(index));
      marker.setAttribute("visibility", "visible");
    };
  }

  // -------------------------------------------------------------------- sites

  function frameText(frame) {
    return location(frame.short, frame.line) + (frame.function ? "  " + frame.function : "");
  }

  function siteBody(site) {
    var body = el("div", "site-body");
    if (site.user_frame) {
      var first = el("p", "open-first");
      add(first, el("span", "label", "Open first"), el("code", null, location(site.user_frame.short, site.user_frame.line)),
        site.user_frame.function ? el("span", "fn", site.user_frame.function) : null);
      add(body, first);
    }
    if (site.native) {
      var nat = el("p", "native-fn");
      add(nat, el("span", "label", "Allocated in native code by"), el("code", null, site.native.function),
        el("span", "fn", site.native.library));
      add(body, nat);
    }
    if (site.holder) {
      var held = el("p", "held-by");
      add(held, el("span", "label", "Held by"), el("code", null, site.holder));
      add(body, held);
    }
    var columns = el("div", "site-columns");
    var tb = el("div", "traceback-box");
    add(tb, el("h4", null, "Traceback, innermost first"));
    var list = el("ol", "traceback");
    site.traceback.forEach(function (frame) {
      var item = el("li", "frame" + (frame.user ? " user" : ""));
      // Real spaces between the parts, so a long line breaks between them, not inside a name.
      add(item, el("code", "loc", location(frame.short, frame.line)), " ", el("span", "fn", frame.function || ""));
      if (frame.user) add(item, " ", el("span", "badge user-tag", "your code"));
      add(list, item);
    });
    if (!site.traceback.length) add(list, el("li", "frame muted", "no traceback recorded"));
    add(tb, list);
    add(columns, tb);
    var src = el("div", "source-box");
    if (site.source && site.user_frame) {
      add(src, el("h4", null, site.user_frame.file));
      var table = el("table", "source");
      site.source.lines.forEach(function (text, k) {
        var number = site.source.start + k;
        var row = el("tr", number === site.source.line ? "hl" : null);
        add(row, el("td", "ln", number), el("td", "code", text));
        add(table, row);
      });
      add(src, table);
    } else {
      add(src, el("h4", null, "Source"));
      add(src, el("p", "muted", site.user_frame
        ? "Source not shown: the file was not readable where this report was written."
        : "No frame of this traceback lies in your own code."));
    }
    add(columns, src);
    add(body, columns);
    return body;
  }

  function sites() {
    var list = document.getElementById("site-list");
    if (!data.sites.length) {
      add(list, el("p", "empty", "No allocation site kept memory across the measured " + unit + "s."));
      return;
    }
    // The view model says which sites go under which title: steady ones are never
    // listed as growing.
    data.site_groups.forEach(function (group, g) {
      if (g === 0) document.getElementById("sites-title").textContent = group.title;
      else add(list, el("h3", "site-group", group.title));
      var box = el("div", "site-group-list");
      box.setAttribute("data-group", g === 0 && data.sites[group.sites[0]].growing ? "growing" : "other");
      group.sites.forEach(function (i) { add(box, siteRow(data.sites[i], i)); });
      add(list, box);
    });
  }

  function siteRow(site, i) {
    var details = el("details", "site" + (site.growing ? " growing" : ""));
    var summary = el("summary");
    var where = el("div", "where");
    add(where, el("code", "loc", location(site.short, site.line)), el("div", "fn", site.function));
    if (site.native) {
      add(where, el("div", "fn native", "native " + site.native.function + " (" + site.native.library + ")"));
    }
    if (site.engine) {
      add(where, el("div", "sub engine", "located by " + site.engine));
    }
    var rate = el("div", "num rate");
    add(rate, el("strong", null, site.rate), el("div", "sub", site.blocks));
    var trend = el("div", "trend");
    add(trend, sparkline(site.series, 132, 30, site.growing ? "up" : ""));
    add(summary, el("span", "rank", "#" + (i + 1)), where, rate, el("div", "num kept", site.kept), trend,
      el("span", "badge " + (site.growing ? "grow" : "flat"), site.growing ? "growing" : "steady"));
    add(details, summary, siteBody(site));
    return details;
  }

  // ------------------------------------------------------------------ holders

  function fact(label, value) {
    var node = el("div", "fact");
    add(node, el("span", "label", label), typeof value === "string" ? el("span", "fact-value", value) : value);
    return node;
  }

  function codes(label, values, cls) {
    var node = el("div", "where-line" + (cls ? " " + cls : ""));
    add(node, el("span", "label", label));
    values.forEach(function (value) { add(node, el("code", null, value)); });
    return node;
  }

  function bounded(box) {
    if (!data.bounded.length) return;
    add(box, el("h3", "site-group", "Bounded containers (they stop at their bound)"));
    data.bounded.forEach(function (b) {
      var card = el("div", "holder bounded");
      var head = el("div", "holder-head");
      add(head, el("code", "holder-path", b.path), el("span", "badge", b.type),
        el("span", "badge warn", b.state), el("span", "badge", "bound " + grouped(b.bound || 0)));
      var facts = el("div", "holder-facts");
      add(facts, fact("items", grouped(b.items || 0) + " of " + grouped(b.bound || 0)),
        fact("trend", sparkline(b.series, 140, 30, "")));
      add(card, head, facts);
      add(box, card);
    });
  }

  function holders() {
    var box = document.getElementById("holder-list");
    if (!data.holders.length) {
      var empty = !meta.holders_searched
        ? "The container search was off for this run (--no-holders)."
        : data.bounded.length
          ? "No unbounded container grows; the growth is in a bounded one, filling toward its bound."
          : "No growing container was found reachable from a module.";
      add(box, el("p", "empty", empty));
      bounded(box);
      return;
    }
    data.holders.forEach(function (h) {
      var card = el("div", "holder" + (h.growing ? " growing" : ""));
      var head = el("div", "holder-head");
      add(head, el("code", "holder-path", h.path), el("span", "badge", h.type), el("span", "badge", h.role),
        el("span", "badge " + (h.growing ? "grow" : "flat"), h.growing ? "growing" : "not growing"));
      if (h.bound !== null) add(head, el("span", "badge", "bound " + grouped(h.bound)));
      var facts = el("div", "holder-facts");
      var growth = el("strong", h.growing ? "pos" : null, h.growth);
      var trend = sparkline(h.series, 140, 30, h.growing ? "up" : "");
      add(facts,
        fact("items", grouped(h.items_first || 0) + " → " + grouped(h.items_last || 0)),
        fact("growth", growth),
        fact("item types", h.item_types.map(function (pair) { return pair[0] + " ×" + grouped(pair[1] || 0); }).join(", ") || "-"),
        fact("trend", trend));
      var where = el("div", "holder-where");
      if (h.defined_at.length) add(where, codes("callables defined at", h.defined_at));
      if (h.made_at.length) add(where, codes("items made at", h.made_at));
      if (h.grown_at) {
        var line = codes("appended at", [h.grown_at]);
        var callers = h.grown_at_stack.slice(1, 3);
        if (callers.length) {
          add(line, el("span", "muted via", "called from"));
          callers.forEach(function (c) { add(line, el("code", "muted", c)); });
        }
        add(where, line);
      }
      if (h.keys_sample.length) add(where, codes("newest keys", h.keys_sample, "keys"));
      add(card, head, facts, where);
      add(box, card);
    });
    bounded(box);
  }

  // ---------------------------------------------------------------- per loop

  function perLoop() {
    var detail = document.getElementById("loop-detail");
    var input = document.getElementById("loop-input");
    var range = document.getElementById("loop-range");
    var count = loops.index.length;
    if (!count) {
      document.getElementById("loop-controls").hidden = true;
      add(detail, el("p", "empty", "No measured " + unit + "s in this run."));
      return;
    }
    var first = loops.index[0], last = loops.index[count - 1];
    input.min = range.min = first;
    input.max = range.max = last;
    var current = count - 1;

    function show(pos) {
      current = Math.max(0, Math.min(count - 1, pos));
      var index = loops.index[current];
      input.value = range.value = index;
      clear(detail);
      var net = loops.net[current];
      var head = el("div", "loop-head");
      var kept = net === null ? "not traced: fast mode watched this " + unit + " with counters only"
        : formatBytes(net, true) + (net >= 0 ? " kept" : " freed");
      add(head, el("strong", null, unit + " " + grouped(index)),
        el("span", net > 0 ? "pos" : (net < 0 ? "neg" : "muted"), kept),
        net === null ? null : el("span", "muted", "(" + formatBytes(loops.traced[current]) + " in " +
          plural(loops.blocks[current] || 0, "block") + " since warm-up)"));
      add(detail, head);
      var flat = loops.top[current];
      var span = loops.span ? loops.span[current] : null;
      if (span) {
        add(detail, el("p", "muted", span[1] === index
          ? "Lines changed over " + unit + "s " + grouped(span[0]) + "\u2013" + grouped(span[1]) +
            " (one per-line diff for them all; the totals above are this " + unit + "'s)."
          : "This " + unit + "'s lines were measured with " + unit + "s " + grouped(span[0]) +
            "\u2013" + grouped(span[1]) + ": see " + unit + " " + grouped(span[1]) + "."));
      }
      // Inside a span, the note above names the loop that holds its lines.
      var inSpan = span && span[1] !== index;
      if (!flat.length) {
        if (!inSpan) {
          add(detail, el("p", "empty", net === null
            ? "Lines are recorded for traced " + unit + "s only."
            : "No line kept or freed memory in this " + unit + "."));
        }
      } else {
        var biggest = 1;
        for (var k = 0; k < flat.length; k += 4) biggest = Math.max(biggest, Math.abs(flat[k + 2] || 0));
        var table = el("table", "grid-table deltas");
        var hr = el("tr");
        add(hr, el("th", null, "file:line"), el("th", "num", "size"), el("th", "num", "blocks"), el("th", "bar-col", ""));
        add(table, add(el("thead"), hr));
        var tbody = el("tbody");
        for (var j = 0; j < flat.length; j += 4) {
          var size = flat[j + 2] || 0;
          var grew = size > 0 || (size === 0 && (flat[j + 3] || 0) > 0);
          var row = el("tr", grew ? "grew" : "freed");
          var where = el("td", "loc");
          add(where, el("code", null, location(loops.files[flat[j]], flat[j + 1])), el("span", "arrow", " =>"));
          var bar = el("td", "bar-col");
          var fill = el("span", "bar " + (grew ? "pos" : "neg"));
          fill.style.width = Math.max(2, Math.round((Math.abs(size) / biggest) * 100)) + "%";
          add(bar, fill);
          add(row, where, el("td", "num " + (grew ? "pos" : "neg"), formatBytes(size, true)),
            el("td", "num muted", blocks(flat[j + 3] || 0)), bar);
          add(tbody, row);
        }
        add(detail, add(table, tbody));
      }
      if (chart.mark) chart.mark(index);
    }
    selectLoop = function (pos, scroll) {
      show(pos);
      if (scroll) document.getElementById("loops").scrollIntoView({ behavior: "smooth", block: "nearest" });
    };
    function byIndex(value) {
      var n = parseInt(value, 10);
      if (!isNaN(n)) show(nearest(loops.index, n));
    }
    input.addEventListener("change", function () { byIndex(input.value); });
    range.addEventListener("input", function () { byIndex(range.value); });
    document.getElementById("loop-prev").addEventListener("click", function () { show(current - 1); });
    document.getElementById("loop-next").addEventListener("click", function () { show(current + 1); });
    document.getElementById("loop-last").addEventListener("click", function () { show(count - 1); });
    document.getElementById("loop-largest").addEventListener("click", function () {
      var best = 0;
      for (var i = 1; i < count; i++) if ((loops.net[i] || 0) > (loops.net[best] || 0)) best = i;
      show(best);
    });
    show(loops.open);
  }

  // --------------------------------------------------------------------- run

  function kvTable(table, rows) {
    rows.forEach(function (row) {
      var tr = el("tr");
      add(tr, el("th", null, row[0]), add(el("td"), el("code", null, row[1])));
      add(table, tr);
    });
  }

  function runTable() {
    kvTable(document.getElementById("run-facts"), data.run);
    kvTable(document.getElementById("settings"), data.settings);
    if (!data.processes.length) return;
    var box = document.getElementById("processes");
    add(box, el("h3", null, "Processes"));
    var t = el("table", "grid-table");
    var hr = el("tr");
    ["pid", "parent", "role", "units", "command", "verdict"].forEach(function (name) { add(hr, el("th", null, name)); });
    add(t, add(el("thead"), hr));
    var tbody = el("tbody");
    data.processes.forEach(function (p) {
      var tr = el("tr", p.leak ? "growing" : null);
      add(tr, el("td", "num", p.pid), el("td", "num", p.parent), el("td", null, p.role),
        el("td", null, p.units), add(el("td"), el("code", null, p.command)),
        el("td", null, p.summary));
      add(tbody, tr);
    });
    add(box, add(t, tbody));
    if (!data.advice.length) return;
    add(box, el("h3", null, "Advice"));
    var list = el("ul", "advice");
    data.advice.forEach(function (line) { add(list, el("li", null, line)); });
    add(box, list);
  }

  // -------------------------------------------------------------------- start

  header();
  verdict();
  legend();
  drawChart();
  sites();
  holders();
  perLoop();
  runTable();

  var resizeTimer = null;
  var lastWidth = document.getElementById("chart-wrap").clientWidth;
  window.addEventListener("resize", function () {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(function () {
      var width = document.getElementById("chart-wrap").clientWidth;
      if (width === lastWidth) return;
      lastWidth = width;
      drawChart();
      var pos = nearest(loops.index, parseInt(document.getElementById("loop-input").value, 10));
      if (pos >= 0 && chart.mark) chart.mark(loops.index[pos]);
    }, 120);
  });

  // A printed report shows every traceback; the page goes back as it was after.
  var closed = [];
  window.addEventListener("beforeprint", function () {
    closed = Array.prototype.filter.call(document.querySelectorAll("details"), function (d) { return !d.open; });
    closed.forEach(function (d) { d.open = true; });
  });
  window.addEventListener("afterprint", function () {
    closed.forEach(function (d) { d.open = false; });
    closed = [];
  });
  document.documentElement.setAttribute("data-ready", "1");
})();
