// The operations page: create a flash sale and watch every item live
// (stock, order queue, orders, cancellations, sold-out flag), refreshed
// every second from GET /admin/products, and for each live item charts of
// its last minutes (buys/s by outcome, stock left, queue depth) drawn as
// inline SVG from GET /admin/history. The admin token stays in this tab's
// session storage, never in a URL.

import { ApiError, ServerClock, duration, request } from "./api.js";

const $ = (id) => document.getElementById(id);
const clock = new ServerClock();
let token = sessionStorage.getItem("seckill.admin");

function notice(text) {
  $("notice").textContent = text;
  $("notice").hidden = !text;
}

function showToken() {
  $("admin-form").hidden = Boolean(token);
  $("admin-ready").hidden = !token;
}

function windowText(product) {
  const now = clock.nowMs() / 1000;
  if (now < product.starts_at) return `starts in ${duration(product.starts_at - now)}`;
  if (now >= product.ends_at) return "ended";
  return `open, ${duration(product.ends_at - now)} left`;
}

function cell(text, label) {
  const td = document.createElement("td");
  td.textContent = text;
  td.dataset.label = label;
  return td;
}

function render(items) {
  const rows = items.map((item) => {
    const p = item.product;
    const tr = document.createElement("tr");
    tr.dataset.product = p.product_id;
    const name = document.createElement("th");
    name.scope = "row";
    const link = document.createElement("a");
    link.href = `/?product=${p.product_id}`;
    link.textContent = `#${p.product_id} ${p.name}`;
    name.append(link);
    tr.append(
      name,
      cell(windowText(p), "Window"),
      cell(`${p.stock_left} / ${p.stock_total}`, "Stock left"),
      cell(item.queue.lag, "Queue"),
      cell(item.queue.pending, "Pending"),
      cell(item.queue.dead_letters, "Dead letters"),
      cell(item.orders.unpaid + item.orders.paid + item.orders.cancelled, "Orders written"),
      cell(item.orders.paid, "Paid"),
      cell(item.orders.cancelled, "Cancelled"),
      cell(item.sold_out_flag ? "raised" : "—", "Sold-out flag"),
    );
    const actions = document.createElement("td");
    if (clock.nowMs() / 1000 < p.ends_at) {
      const end = document.createElement("button");
      end.type = "button";
      end.className = "link";
      end.textContent = "End sale";
      end.addEventListener("click", () => endSale(p.product_id));
      actions.append(end);
    }
    tr.append(actions);
    return tr;
  });
  $("items").tBodies[0].replaceChildren(...rows);
  $("updated").textContent = `updated ${new Date(clock.nowMs()).toLocaleTimeString()}`;
}

const SVG = "http://www.w3.org/2000/svg";
/** Seconds of history the charts show. */
const CHART_SECONDS = 180;
const OUTCOMES = [
  ["queued", "queued", "#17804a"],
  ["sold_out", "sold out", "#5b6478"],
  ["already_ordered", "already ordered", "#c77700"],
  ["rate_limited", "rate limited", "#6a3fb5"],
  ["other", "other", "#b3261e"],
];

function svg(name, attributes = {}) {
  const element = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, value);
  return element;
}

/** A round number at or above `value`, for the y axis. */
function ceiling(value) {
  if (value <= 1) return 1;
  const step = 10 ** Math.floor(Math.log10(value));
  for (const m of [1, 2, 5, 10]) if (value <= m * step) return m * step;
  return 10 * step;
}

/**
 * A small line chart: `series` is [{ key, name, color, points: [[t_s, y]] }],
 * drawn from `from` to `to` (unix seconds).
 */
function lineChart(kind, title, series, from, to) {
  const span = Math.round((to - from) / 60);
  const width = 320, height = 120, left = 34, right = 6, top = 8, bottom = 18;
  const top_y = ceiling(Math.max(0, ...series.flatMap((s) => s.points.map(([, y]) => y))));
  const x = (t) => left + ((t - from) / (to - from)) * (width - left - right);
  const y = (v) => top + (1 - v / top_y) * (height - top - bottom);
  const chart = svg("svg", {
    viewBox: `0 0 ${width} ${height}`, role: "img", class: "chart", "data-chart": kind,
  });
  const label = svg("title");
  label.textContent = title;
  chart.append(label);
  chart.append(svg("line", { x1: left, y1: y(0), x2: width - right, y2: y(0), class: "axis" }));
  chart.append(svg("line", { x1: left, y1: y(top_y), x2: width - right, y2: y(top_y), class: "grid-line" }));
  for (const [value, at] of [[top_y, y(top_y) + 4], [0, y(0) + 4]]) {
    const text = svg("text", { x: left - 4, y: at, "text-anchor": "end", class: "tick" });
    text.textContent = value;
    chart.append(text);
  }
  for (const [text, at, anchor] of [[span >= 1 ? `−${span} min` : `−${to - from} s`, left, "start"], ["now", width - right, "end"]]) {
    const tick = svg("text", { x: at, y: height - 4, "text-anchor": anchor, class: "tick" });
    tick.textContent = text;
    chart.append(tick);
  }
  for (const s of series) {
    const points = s.points.filter(([t]) => t >= from && t <= to);
    if (points.length === 0) continue;
    chart.append(svg("polyline", {
      points: points.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(" "),
      stroke: s.color, "data-series": s.key, class: "series",
    }));
  }
  return chart;
}

function legend(entries) {
  const list = document.createElement("ul");
  list.className = "legend";
  for (const [name, color, value] of entries) {
    const item = document.createElement("li");
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = color;
    item.append(swatch, `${name} ${value}`);
    list.append(item);
  }
  return list;
}

/** One figure per live item: its buys/s, stock left and queue depth. */
function renderCharts(items, histories) {
  const byId = new Map(histories.map((h) => [h.product_id, h]));
  const nowS = clock.nowMs() / 1000;
  const live = items.filter((item) => nowS < item.product.ends_at);
  const to = Math.floor(nowS);
  const figures = live.map((item) => {
    const p = item.product;
    const history = byId.get(p.product_id) || { buys: [], levels: [] };
    // The last CHART_SECONDS, or less when the item's story is shorter
    // (never under 20 s), so a fresh rush is not a sliver at the edge.
    const first = Math.min(
      ...history.buys.filter((b) => OUTCOMES.some(([key]) => b[key] > 0)).map((b) => b.t),
      ...history.levels.map((l) => l.t_ms / 1000),
    );
    const from = Math.max(to - CHART_SECONDS, Math.min(to - 20, Math.floor(first) - 3));
    const buys = history.buys.filter((b) => b.t >= from);
    const total = (key) => buys.reduce((sum, b) => sum + b[key], 0);
    const figure = document.createElement("figure");
    figure.className = "item-charts";
    figure.dataset.product = p.product_id;
    const caption = document.createElement("figcaption");
    caption.textContent = `#${p.product_id} ${p.name}`;
    const buySeries = OUTCOMES.map(([key, name, color]) => ({
      key, name, color, points: buys.map((b) => [b.t, b[key]]),
    }));
    const levels = history.levels.map((l) => ({ ...l, t: l.t_ms / 1000 })).filter((l) => l.t < to);
    // The list just read is newer than any history point: it is "now".
    levels.push({ t: to, stock_left: p.stock_left, queue: item.queue.lag + item.queue.pending });
    const stock = [{ key: "stock_left", name: "stock left", color: "#d7263d", points: levels.map((l) => [l.t, l.stock_left]) }];
    const queue = [{ key: "queue", name: "queue", color: "#1f6feb", points: levels.map((l) => [l.t, l.queue]) }];
    const panel = (kind, heading, chart, entries) => {
      const box = document.createElement("div");
      box.className = "chart-box";
      const h = document.createElement("h3");
      h.textContent = heading;
      box.append(h, chart, legend(entries));
      return box;
    };
    figure.append(
      caption,
      panel("buys", "Buys/s by outcome", lineChart("buys", `Buys per second of #${p.product_id}`, buySeries, from, to),
        OUTCOMES.map(([key, name, color]) => [name, color, total(key)])),
      panel("stock", "Stock left", lineChart("stock", `Stock left of #${p.product_id}`, stock, from, to),
        [["now", "#d7263d", p.stock_left]]),
      panel("queue", "Queue depth", lineChart("queue", `Queue of #${p.product_id}`, queue, from, to),
        [["now", "#1f6feb", item.queue.lag + item.queue.pending]]),
    );
    return figure;
  });
  $("charts").replaceChildren(...figures);
  $("charts-empty").hidden = figures.length > 0;
}

async function refresh() {
  if (!token) return;
  try {
    const [items, histories] = await Promise.all([
      request("GET", "/admin/products", { token }),
      request("GET", "/admin/history", { token }).catch(() => []),
    ]);
    render(items);
    renderCharts(items, histories);
    notice("");
  } catch (err) {
    if (err instanceof ApiError && err.code === "unauthorized") {
      forget();
      notice("That admin token was refused.");
    } else {
      notice(err.message);
    }
  }
}

async function endSale(productId) {
  if (!confirm(`End the sale of item #${productId} now?`)) return;
  try {
    await request("DELETE", `/admin/products/${productId}`, { token });
    refresh();
  } catch (err) {
    notice(err.message);
  }
}

async function create(event) {
  event.preventDefault();
  const form = new FormData(event.target);
  const startsAt = Math.floor(clock.nowMs() / 1000) + Number(form.get("starts_in"));
  const body = {
    name: form.get("name"),
    price_cents: Number(form.get("price_cents")),
    flash_price_cents: Number(form.get("flash_price_cents")),
    stock: Number(form.get("stock")),
    starts_at: startsAt,
    ends_at: startsAt + 60 * Number(form.get("minutes")),
  };
  try {
    const product = await request("POST", "/admin/products", { token, body });
    $("created").textContent = `Created item #${product.product_id}: ${product.name}.`;
    $("created").dataset.tone = "good";
    refresh();
  } catch (err) {
    $("created").textContent = err.message;
    $("created").dataset.tone = "bad";
  }
}

function forget() {
  token = null;
  sessionStorage.removeItem("seckill.admin");
  showToken();
}

async function start() {
  $("admin-form").addEventListener("submit", (event) => {
    event.preventDefault();
    token = $("admin-token").value.trim();
    sessionStorage.setItem("seckill.admin", token);
    showToken();
    refresh();
  });
  $("admin-forget").addEventListener("click", forget);
  $("create-form").addEventListener("submit", create);
  showToken();
  await clock.sync().catch(() => {});
  refresh();
  setInterval(refresh, 1000);
}

start();
