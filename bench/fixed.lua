-- fixed.lua: wrk script, every request the same (headers given with -H).
-- Only adds report.lua's summary line.
dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "report.lua")
