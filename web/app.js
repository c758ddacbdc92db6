// The storefront: one flash item, chosen with ?product=<id>.
//
// The page follows a buy from start to end: a countdown on the shop's
// clock, the buy button only inside the sale window, "queued" while the
// order is being written (polling the result with backoff), then the order
// with a payment deadline, or a clear reason why not. When the shop says
// the sale is busy (nothing reserved), it waits the delay the shop gives
// and tries again by itself.

import { ApiError, ServerClock, duration, money, request, sleep } from "./api.js";

const $ = (id) => document.getElementById(id);
const clock = new ServerClock();
const productId = new URLSearchParams(location.search).get("product");

const state = {
  product: null,
  token: localStorage.getItem("seckill.token"),
  member: localStorage.getItem("seckill.member"),
  busy: false, // a buy is in flight or queued
  held: false, // this member holds a reservation or order for the item
  order: null,
};

const MESSAGES = {
  sold_out: "Sold out. Every unit has been taken.",
  already_ordered: "You already have this item reserved or ordered.",
  not_started: "The sale has not started yet.",
  ended: "The sale has ended.",
  rate_limited: "Too many tries. Wait a moment and try again.",
  sale_busy: "The sale is very busy. Nothing was reserved yet; trying again…",
  unavailable: "The shop is very busy. Nothing was reserved; try again.",
  unauthorized: "Please sign in again.",
  unknown_product: "This item does not exist.",
  network: "The shop cannot be reached. Check your connection.",
};

function say(text, tone = "") {
  const status = $("status");
  status.textContent = text;
  status.dataset.tone = tone;
}

function notice(text) {
  $("notice").textContent = text;
  $("notice").hidden = !text;
}

/** Adds a step to the visible timeline of this purchase. */
function step(kind, text) {
  const item = document.createElement("li");
  item.dataset.step = kind;
  const time = new Date(clock.nowMs()).toLocaleTimeString();
  item.innerHTML = `<span class="when">${time}</span> `;
  item.append(text);
  $("timeline").append(item);
}

function explain(err) {
  if (err instanceof ApiError) return MESSAGES[err.code] ?? err.message;
  return String(err);
}

// ---- signing in -----------------------------------------------------------

function showAccount() {
  const signedIn = Boolean(state.token);
  $("signed-in").hidden = !signedIn;
  $("member-label").textContent = state.member ?? "";
  $("sign-in-form").hidden = signedIn || $("sign-in-form").dataset.disabled === "yes";
  $("token-form").hidden = signedIn || $("sign-in-form").dataset.disabled !== "yes";
  render();
}

async function signIn(event) {
  event.preventDefault();
  const member = Number($("member-id").value);
  if (!Number.isInteger(member) || member <= 0) {
    notice("A member id is a positive whole number.");
    return;
  }
  try {
    const { token } = await request("POST", "/api/session", { body: { member_id: member } });
    remember(token, String(member));
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) {
      // Demo login is off on this shop: members bring a token instead.
      $("sign-in-form").dataset.disabled = "yes";
      notice("Demo sign-in is off on this shop. Paste the member token your shop gave you.");
      showAccount();
      $("token").focus();
    } else {
      notice(explain(err));
    }
  }
}

function useToken(event) {
  event.preventDefault();
  const token = $("token").value.trim();
  const member = token.split(".")[1];
  if (!token.startsWith("v1.") || !member) {
    notice("That does not look like a member token (v1.<member>.<expiry>.<signature>).");
    return;
  }
  remember(token, member);
}

function remember(token, member) {
  state.token = token;
  state.member = member;
  localStorage.setItem("seckill.token", token);
  localStorage.setItem("seckill.member", member);
  notice("");
  resetPurchase();
  showAccount();
  resume();
}

function signOut() {
  state.token = null;
  state.member = null;
  localStorage.removeItem("seckill.token");
  localStorage.removeItem("seckill.member");
  resetPurchase();
  showAccount();
  $("member-id").focus();
}

function resetPurchase() {
  state.busy = false;
  state.held = false;
  state.order = null;
  $("timeline").replaceChildren();
  $("order").hidden = true;
  say("");
}

// ---- the product and its window -------------------------------------------

async function loadProduct() {
  try {
    state.product = await request("GET", `/api/products/${encodeURIComponent(productId)}`);
    const p = state.product;
    $("product").setAttribute("aria-busy", "false");
    $("product-name").textContent = p.name;
    document.title = `${p.name} · Flash sale`;
    $("flash-price").textContent = money(p.flash_price_cents);
    $("list-price").textContent = money(p.price_cents);
    $("stock-left").textContent = p.stock_left;
    $("stock-total").textContent = p.stock_total;
    $("stock-meter").style.width = `${p.stock_total ? (100 * p.stock_left) / p.stock_total : 0}%`;
  } catch (err) {
    $("product-name").textContent = "Item unavailable";
    notice(explain(err));
  }
  render();
}

/** The sale's phase on the shop's clock. */
function phase() {
  const p = state.product;
  if (!p) return "loading";
  const now = clock.nowMs() / 1000;
  if (now < p.starts_at) return "upcoming";
  if (now >= p.ends_at) return "ended";
  return "open";
}

function render() {
  const p = state.product;
  const current = phase();
  const now = clock.nowMs() / 1000;
  const countdown = $("countdown");
  if (current === "upcoming") countdown.textContent = `Starts in ${duration(p.starts_at - now)}`;
  else if (current === "open") countdown.textContent = p.sold_out ? "Sold out" : `On sale · ends in ${duration(p.ends_at - now)}`;
  else if (current === "ended") countdown.textContent = "The sale has ended";
  else countdown.textContent = "";

  const buy = $("buy");
  buy.disabled = !(current === "open" && state.token && !state.busy && !state.held && !p.sold_out);
  if (!state.token && current !== "loading") buy.title = "Sign in to buy";
  else buy.removeAttribute("title");
  if (p?.sold_out && !state.held && !state.busy && current === "open") say(MESSAGES.sold_out, "bad");
}

// ---- buying ---------------------------------------------------------------

/** Answers that say nothing was reserved and the buy may simply be sent again. */
const WAIT_AND_RETRY = new Set(["sale_busy", "unavailable"]);

/**
 * Sends the buy; while the shop answers that the sale is busy (nothing
 * reserved), waits its Retry-After and sends it again, as long as the sale
 * is open and the buyer is still signed in. Resolves on the first answer
 * that reserved a unit; rejects with any other answer. No buy is sent
 * while another is in flight, and none after one was accepted.
 */
async function reserve() {
  for (let attempt = 1; ; attempt += 1) {
    try {
      return await request("POST", `/api/seckill/${productId}/orders`, { token: state.token });
    } catch (err) {
      if (!(err instanceof ApiError) || !WAIT_AND_RETRY.has(err.code) || phase() !== "open") throw err;
      const wait = Math.min(Math.max(err.retryAfter ?? 1, 1), 30);
      for (let left = wait; left > 0; left -= 1) {
        say(`The sale is busy: nothing was reserved yet. Trying again in ${left} s… (attempt ${attempt})`, "wait");
        $("status").dataset.waiting = "sale_busy";
        await sleep(1000);
      }
      delete $("status").dataset.waiting;
      if (!state.token || phase() !== "open") throw err;
      say("Reserving…");
    }
  }
}

async function buy() {
  if (state.busy) return;
  state.busy = true;
  render();
  say("Reserving…");
  try {
    await reserve();
    state.held = true;
    say("Queued: your unit is reserved and your order is being written.", "good");
    step("queued", "Queued — unit reserved");
    await followResult();
  } catch (err) {
    state.busy = false;
    if (err instanceof ApiError && err.code === "already_ordered") {
      state.held = true;
      await followResult();
    } else if (err instanceof ApiError && err.code === "outcome_unknown") {
      // The buy reached the shop, which went silent before answering: it may
      // have been reserved. Ask rather than tell the buyer to try again.
      say("The shop stopped answering mid-purchase. Checking whether your unit was reserved…");
      state.busy = true;
      render();
      if ((await followResult()) === "none") say(MESSAGES.unavailable, "bad");
    } else {
      say(explain(err), "bad");
      if (err instanceof ApiError && err.code === "unauthorized") signOut();
    }
    loadProduct();
  }
  render();
}

/**
 * Polls the result until the order is written, the reservation failed, or
 * there is none; returns that final status.
 */
async function followResult() {
  let delay = 250;
  for (;;) {
    let result;
    try {
      result = await request("GET", `/api/seckill/${productId}/result`, { token: state.token });
    } catch (err) {
      say(`${explain(err)} Still trying…`);
      await sleep(2000);
      continue;
    }
    if (result.status === "success") {
      state.busy = false;
      step("ordered", `Order ${result.order_id} written`);
      say("Your order is in. Pay before the deadline to keep it.", "good");
      loadProduct();
      await showOrder(result.order_id);
      return result.status;
    }
    if (result.status === "failed") {
      state.busy = false;
      state.held = false;
      step("failed", "Reservation failed — the unit went back");
      say("Your reservation could not be completed and the unit went back. You may try again.", "bad");
      return result.status;
    }
    if (result.status === "none") {
      state.busy = false;
      state.held = false;
      return result.status;
    }
    await sleep(delay);
    delay = Math.min(delay * 2, 2000);
  }
}

// ---- the order -------------------------------------------------------------

async function showOrder(orderId) {
  try {
    state.order = await request("GET", `/api/orders/${orderId}`, { token: state.token });
  } catch (err) {
    say(explain(err), "bad");
    return;
  }
  $("order").hidden = false;
  $("order-number").textContent = `#${state.order.order_id}`;
  $("order-price").textContent = money(state.order.price_cents);
  renderOrder();
  if (state.order.status === "unpaid") watchDeadline();
}

function renderOrder() {
  const order = state.order;
  if (!order) return;
  const status = $("order-status");
  const pay = $("pay");
  if (order.status === "paid") {
    status.textContent = "Paid. Thank you!";
    status.dataset.tone = "good";
    pay.hidden = true;
    $("pay-countdown").textContent = "";
  } else if (order.status === "cancelled") {
    status.textContent = "Cancelled: it was not paid in time, and the unit went back on sale.";
    status.dataset.tone = "bad";
    pay.hidden = true;
    $("pay-countdown").textContent = "";
  } else {
    status.textContent = "Awaiting payment.";
    status.dataset.tone = "";
    pay.hidden = false;
    const left = order.pay_deadline - clock.nowMs() / 1000;
    $("pay-countdown").textContent = left > 0 ? `Pay within ${duration(left)}` : "Payment deadline passed";
  }
}

async function payOrder() {
  const pay = $("pay");
  pay.disabled = true;
  try {
    await request("POST", `/api/orders/${state.order.order_id}/pay`, { token: state.token });
    state.order.status = "paid";
    step("paid", "Paid");
  } catch (err) {
    if (err instanceof ApiError && err.code === "order_cancelled") {
      orderCancelled();
    } else {
      say(explain(err), "bad");
    }
  }
  pay.disabled = false;
  renderOrder();
}

/** The deadline passed unpaid: the unit went back and the member may buy again. */
function orderCancelled() {
  state.order.status = "cancelled";
  state.held = false;
  step("cancelled", "Cancelled — not paid in time");
  say("");
  loadProduct();
}

/** After the deadline, asks until the shop has cancelled the order. */
async function watchDeadline() {
  while (state.order && state.order.status === "unpaid") {
    await sleep(1000);
    if (!state.order || clock.nowMs() / 1000 < state.order.pay_deadline) continue;
    try {
      const order = await request("GET", `/api/orders/${state.order.order_id}`, { token: state.token });
      if (order.status !== state.order.status) {
        state.order = order;
        if (order.status === "cancelled") orderCancelled();
        renderOrder();
        render();
      }
    } catch {
      // Try again next second.
    }
  }
}

/** A returning member sees their reservation or order again. */
async function resume() {
  if (!state.token || !productId) return;
  try {
    const result = await request("GET", `/api/seckill/${productId}/result`, { token: state.token });
    if (result.status === "queued" || result.status === "success") {
      state.held = true;
      state.busy = result.status === "queued";
      if (result.status === "queued") step("queued", "Queued — unit reserved");
      await followResult();
    }
  } catch (err) {
    if (err instanceof ApiError && err.code === "unauthorized") signOut();
  }
  render();
}

// ---- start -------------------------------------------------------------------

async function start() {
  $("sign-in-form").addEventListener("submit", signIn);
  $("token-form").addEventListener("submit", useToken);
  $("sign-out").addEventListener("click", signOut);
  $("buy").addEventListener("click", buy);
  $("pay").addEventListener("click", payOrder);
  showAccount();
  if (!productId) {
    $("product-name").textContent = "No item chosen";
    notice("Open this page with ?product=<id> to see a flash sale.");
    return;
  }
  try {
    await clock.sync();
  } catch {
    notice("The shop's clock cannot be read; times follow this device's clock.");
  }
  await loadProduct();
  resume();
  setInterval(() => {
    render();
    renderOrder();
  }, 250);
  setInterval(loadProduct, 2000);
  setInterval(() => clock.sync().catch(() => {}), 60000);
}

start();
