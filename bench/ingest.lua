-- wrk script: POST batches of 1000 readings (100 machines x 10), each reading with its own
-- time, so that no reading repeats across requests or threads (a repeated reading would be a
-- cheap duplicate for millwatch and an overwrite for InfluxDB).
--
--   wrk ... -s bench/ingest.lua http://HOST:PORT -- json   POST /ingest, NDJSON (millwatch)
--   wrk ... -s bench/ingest.lua http://HOST:PORT -- lp     POST /write?db=bench&precision=s,
--                                                          line protocol (InfluxDB 1.x)
local threads = {}
local thread_count = 0

function setup(thread)
  thread:set("id", thread_count)
  thread_count = thread_count + 1
  table.insert(threads, thread)
end

local mode, path, ctype
local heads, tails = {}, {}
local counter = 0
local base = 1000000000

function init(args)
  mode = args[1] or "json"
  math.randomseed(1234 + id)
  -- Each line is head .. time .. tail; the values are fixed per line, the time is not.
  for i = 0, 999 do
    -- Each thread (gateway) owns its machines, so each machine's readings arrive in time order.
    local machine = string.format("press-%d-%03d", id, i % 100)
    local t = 60 + 20 * math.random()
    local speed = 1400 + math.random(0, 200)
    local p = 4 + math.random()
    if mode == "lp" then
      heads[i + 1] = string.format("machine,machine_id=%s temperature=%.3f,speed=%di,pressure=%.4f,status=\"RUNNING\" ",
        machine, t, speed, p)
      tails[i + 1] = ""
    else
      heads[i + 1] = string.format('{"machine_id":"%s","timestamp":', machine)
      tails[i + 1] = string.format(',"temperature":%.3f,"speed":%d,"pressure":%.4f,"status":"RUNNING"}', t, speed, p)
    end
  end
  if mode == "lp" then
    path, ctype = "/write?db=bench&precision=s", "text/plain"
  else
    path, ctype = "/ingest", "application/x-ndjson"
  end
  -- Each run (by the clock) and each thread takes its own range of times, so that nothing is
  -- repeated across runs or threads: 10^6 seconds per run, half of that per thread.
  base = base + (os.time() % 1000) * 1000000 + id * 500000
end

function request()
  local lines = {}
  -- Ten readings per machine per request, at ten distinct seconds.
  local t0 = base + counter * 10
  counter = counter + 1
  for i = 1, 1000 do
    lines[i] = heads[i] .. (t0 + math.floor((i - 1) / 100)) .. tails[i]
  end
  return wrk.format("POST", path, { ["Content-Type"] = ctype }, table.concat(lines, "\n"))
end

function done(summary, latency, requests)
  local secs = summary.duration / 1e6
  local bad = summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout
  local ok = summary.requests - bad
  io.write(string.format("result: %d requests (%d failed) in %.1f s -> %.0f readings/s; p50 %.2f ms, p99 %.2f ms\n",
    summary.requests, bad, secs, ok * 1000 / secs, latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
