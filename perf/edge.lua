-- perf/edge.lua: the wrk script of `SCENARIO=edge perf/compare.sh`.
--
--   wrk -s perf/edge.lua URL -- TOKENS_FILE COUNT
--
-- Sends `Authorization: Bearer <token>` on every request, the token taken from TOKENS_FILE (one
-- a line, as perf/tools/jwt-tokens.py writes them):
--   COUNT = 1   always the file's first token (the "warm" run: one client, one token);
--   COUNT = N   one of the file's first N tokens, picked uniformly at random for each request
--               (the "cold" run: N clients' tokens interleaved).
-- Every request is formatted once in init(), so a request costs wrk one table lookup.
--
-- Every answer that is not a 200 is counted by status; done() prints one line that
-- compare.sh reads, always, even when it is zero:
--   edge.lua: non-200 responses: 0 of 123456 (tokens: 10000)
-- followed by one line per status seen ("edge.lua: status 401: 12"). A run with any non-200
-- is not a measurement of the work the scenario means to compare.

local threads = {}

function setup(thread)
    thread:set("id", #threads + 1)
    table.insert(threads, thread)
end

local requests = {}
-- Globals, read by done() through thread:get(): count, non200, responses, statuses.
count = 0

function init(args)
    local file, want = args[1], tonumber(args[2])
    if not file or not want or want < 1 then
        error("usage: wrk -s edge.lua URL -- TOKENS_FILE COUNT")
    end
    for line in io.lines(file) do
        if #requests == want then break end
        if line ~= "" then
            requests[#requests + 1] = wrk.format(nil, nil, {
                ["Authorization"] = "Bearer " .. line,
            })
        end
    end
    if #requests < want then
        error(string.format("edge.lua: %s holds %d tokens, %d wanted", file, #requests, want))
    end
    count = #requests
    -- Each thread its own sequence (os.time() alone would give every thread the same one).
    math.randomseed(os.time() * 1000 + id)
    non200 = 0
    responses = 0
    statuses = {}
end

function request()
    if count == 1 then
        return requests[1]
    end
    return requests[math.random(count)]
end

function response(status, headers, body)
    responses = responses + 1
    if status ~= 200 then
        non200 = non200 + 1
        local key = tostring(status)
        statuses[key] = (statuses[key] or 0) + 1
    end
end

function done(summary, latency, requests)
    local bad, total, tokens = 0, 0, 0
    local by_status = {}
    for _, thread in ipairs(threads) do
        bad = bad + thread:get("non200")
        total = total + thread:get("responses")
        tokens = thread:get("count")
        for status, n in pairs(thread:get("statuses")) do
            by_status[status] = (by_status[status] or 0) + n
        end
    end
    io.write(string.format("edge.lua: non-200 responses: %d of %d (tokens: %d)\n", bad, total, tokens))
    for status, n in pairs(by_status) do
        io.write(string.format("edge.lua: status %s: %d\n", status, n))
    end
end
