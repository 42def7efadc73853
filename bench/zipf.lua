-- zipf.lua: wrk script, sessions drawn from a Zipf distribution over <users>
-- users (P(k) ~ 1/k^s): a realistic mix of hot and cold sessions.
-- Arguments: <ns> (namespace distinct per run), <users> (100000), <s> (1.0),
-- <seed>, and optionally <ids>: then each request's path is the URL's path
-- plus "/orders/<id>", <id> uniform in 1..<ids> (a realistic API whose paths
-- carry resource ids, so that URI-keyed decisions rarely repeat). The
-- cumulative distribution is precomputed at init; each request draws a rank
-- by binary search. Counts distinct sessions per thread (exact with one wrk
-- thread): the user-service calls a session-keyed cache needs.
dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "report.lua")

local prefix = "session=valid-z-"
local headers = {}
local cdf = {}
local users = 100000
local seen = {}
local ids = nil
issued, distinct = 0, 0

function init(args)
	prefix = "session=valid-" .. (args[1] or "z") .. "-"
	users = tonumber(args[2]) or users
	local s = tonumber(args[3]) or 1.0
	ids = tonumber(args[5])
	math.randomseed((tonumber(args[4]) or 1) * 7919 + (tid or 0))
	local sum = 0
	for k = 1, users do
		sum = sum + 1 / k ^ s
		cdf[k] = sum
	end
	for k = 1, users do
		cdf[k] = cdf[k] / sum
	end
end

function request()
	local u = math.random()
	local lo, hi = 1, users
	while lo < hi do
		local mid = math.floor((lo + hi) / 2)
		if cdf[mid] < u then lo = mid + 1 else hi = mid end
	end
	issued = issued + 1
	if not seen[lo] then
		seen[lo] = true
		distinct = distinct + 1
	end
	headers["Cookie"] = prefix .. lo
	if ids then
		return wrk.format(nil, wrk.path .. "/orders/" .. math.random(ids), headers)
	end
	return wrk.format(nil, nil, headers)
end
