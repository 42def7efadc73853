-- unique.lua: wrk script, every request carries a session cookie never used
-- before ("session=valid-<ns>-<thread>-<n>"), so every request is a cache
-- miss. Argument: <ns>, a namespace distinct per run (warm-up included).
dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "report.lua")

local prefix = "session=valid-u"
local headers = {}
issued, distinct = 0, 0

function init(args)
	prefix = "session=valid-" .. (args[1] or "u") .. "-" .. tostring(tid or 0) .. "-"
end

function request()
	issued = issued + 1
	distinct = issued
	headers["Cookie"] = prefix .. issued
	return wrk.format(nil, nil, headers)
end
