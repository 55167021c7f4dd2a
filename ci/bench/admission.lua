-- wrk script: POST /v2/tasks and count answers by status.
-- Used by ci/bench/admission.sh.
wrk.method = "POST"
wrk.body = '{"prompt":"hi","max_tokens":256,"priority":"batch"}'
wrk.headers["Content-Type"] = "application/json"

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  accepted, rejected, server_errors, other = 0, 0, 0, 0
end

function response(status, headers, body)
  if status == 202 then
    accepted = accepted + 1
  elseif status == 429 then
    rejected = rejected + 1
  elseif status >= 500 then
    server_errors = server_errors + 1
  else
    other = other + 1
  end
end

function done(summary, latency, requests)
  local a, r, e, o = 0, 0, 0, 0
  for _, t in ipairs(threads) do
    a = a + t:get("accepted")
    r = r + t:get("rejected")
    e = e + t:get("server_errors")
    o = o + t:get("other")
  end
  local secs = summary.duration / 1e6
  io.write(string.format("decisions: %d in %.1f s = %.0f/s (202: %d, 429: %d, 5xx: %d, other: %d, socket errors: %d)\n",
    summary.requests, secs, summary.requests / secs, a, r, e, o,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
  io.write(string.format("latency ms: p50 %.3f, p90 %.3f, p99 %.3f, max %.3f\n",
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000))
end
