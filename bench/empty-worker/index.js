// The edge's floor: a Worker that answers every request at once with the
// edge's sold-out answer (409, the contract's `sold_out` body, the same
// headers) and does nothing else. scripts/bench runs it under the same
// `wrangler dev` and flags as the edge and loads both with the same tail, so
// the edge's own tail is read against what wrangler dev and workerd cost
// on this machine before any edge code runs.
const body = JSON.stringify({ error: "sold_out", message: "sold out" });

export default {
  fetch() {
    return new Response(body, {
      status: 409,
      headers: { "content-type": "application/json", "x-served-by": "edge" },
    });
  },
};
