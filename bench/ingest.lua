-- wrk script: POST /ingest with NDJSON bodies of 1000 readings each (100 machines x 10).
-- Readings carry no timestamp, so the server stamps them on arrival and every reading is new
-- (a replayed body with timestamps would be answered as duplicates, which is cheaper).
local bodies = {}
local n_bodies = 64
local counter = 0

function init(args)
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
  for b = 1, n_bodies do
    local lines = {}
    for i = 0, 999 do
      lines[#lines + 1] = string.format(
        '{"machine_id":"press-%03d","temperature":%.3f,"speed":%d,"pressure":%.4f,"status":"RUNNING"}',
        i % 100, 60 + 20 * math.random(), 1400 + math.random(0, 200), 4 + math.random())
    end
    bodies[b] = table.concat(lines, "\n")
  end
end

function request()
  counter = counter + 1
  return wrk.format("POST", "/ingest", { ["Content-Type"] = "application/x-ndjson" },
    bodies[(counter % n_bodies) + 1])
end

function done(summary, latency, requests)
  local secs = summary.duration / 1e6
  local ok = summary.requests - summary.errors.status - summary.errors.connect - summary.errors.read - summary.errors.write - summary.errors.timeout
  io.write(string.format("ingest: %d requests (%d ok) in %.1f s -> %.0f readings/s; p50 %.2f ms, p99 %.2f ms\n",
    summary.requests, ok, secs, ok * 1000 / secs, latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
