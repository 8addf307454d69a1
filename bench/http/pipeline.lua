-- wrk script for bench/run_http.sh: `wrk ... -s pipeline.lua URL -- DEPTH`.
--
-- DEPTH 1 (or none): wrk's own static request, one request per write (no Lua per request).
-- DEPTH > 1: DEPTH copies of the request in one buffer, which wrk sends in one write and
-- counts as DEPTH requests (wrk parses the buffer to learn the depth); it writes the next
-- batch once all DEPTH responses of a connection are in.
--
-- At the end it prints one line of JSON (after wrk's own summary) that run_http.py reads.

init = function(args)
  local depth = tonumber(args[1]) or 1
  if depth > 1 then
    local copies = {}
    for i = 1, depth do
      copies[i] = wrk.format() -- GET, the URL's path, wrk's headers (Host)
    end
    local batch = table.concat(copies)
    request = function()
      return batch
    end
  end
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "bytes": %d, "errors_connect": %d, ' ..
    '"errors_read": %d, "errors_write": %d, "errors_status": %d, "errors_timeout": %d, ' ..
    '"latency_p50_us": %d, "latency_p99_us": %d, "latency_max_us": %d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(99), latency.max))
end
