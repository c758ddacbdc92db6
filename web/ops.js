// The operations page: create a flash sale and watch every item live
// (stock, order queue, orders, cancellations, sold-out flag), refreshed
// every second from GET /admin/products. The admin token stays in this
// tab's session storage, never in a URL.

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

async function refresh() {
  if (!token) return;
  try {
    render(await request("GET", "/admin/products", { token }));
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
