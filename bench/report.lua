-- report.lua: loaded by the make bench wrk scripts (fixed.lua, unique.lua,
-- zipf.lua). Numbers the threads and prints one machine-readable line from
-- done(): "BENCH {json}" with counts, errors and latency percentiles (us).
-- Scripts keep two globals per thread: issued (requests generated) and
-- distinct (distinct sessions among them).

local threads = {}

function setup(thread)
	thread:set("tid", #threads)
	table.insert(threads, thread)
end

function done(summary, latency, requests)
	local issued, distinct = 0, 0
	for _, t in ipairs(threads) do
		issued = issued + (t:get("issued") or 0)
		distinct = distinct + (t:get("distinct") or 0)
	end
	local e = summary.errors
	io.write(string.format('BENCH {"requests":%d,"duration_us":%d,"bytes":%d,' ..
		'"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,' ..
		'"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d,"mean_us":%.1f,' ..
		'"issued":%d,"distinct":%d}\n',
		summary.requests, summary.duration, summary.bytes,
		e.connect, e.read, e.write, e.status, e.timeout,
		latency:percentile(50), latency:percentile(90), latency:percentile(99),
		latency:percentile(99.9), latency.max, latency.mean,
		issued, distinct))
end
