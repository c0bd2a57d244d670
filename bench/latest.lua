-- wrk script: GET /data/latest; prints requests/s and latency percentiles.
function done(summary, latency, requests)
  local secs = summary.duration / 1e6
  io.write(string.format("latest: %.0f requests/s; p50 %.3f ms, p99 %.3f ms, errors %d\n",
    summary.requests / secs, latency:percentile(50) / 1000, latency:percentile(99) / 1000, summary.errors.status))
end
