-- perf/flood.lua: the wrk scripts of perf/flood.sh (rate-limit keys in `x-key`).
--
--   wrk -s perf/flood.lua URL -- distinct COUNT DONE_FILE
--       every request a new key: "flood-<t>-<n>" for thread t and n = 0, 1, 2 ... (a counter,
--       not random, so no key repeats, across threads too). Once COUNT
--       answers have come back, the thread writes DONE_FILE and stops; flood.sh then ends wrk
--       (SIGINT, so wrk still prints its report). The keys sent are at least COUNT: a few more
--       may be in flight on the other connections when the COUNT-th answer arrives.
--   wrk -s perf/flood.lua URL -- cycle COUNT
--       the same load over a fixed set of COUNT keys, in turn ("cycle-0" .. "cycle-<COUNT-1>",
--       each thread from its own place in the cycle):
--       the control run, whose only difference from a flood is how many distinct keys it sends.
--   wrk -s perf/flood.lua URL -- fixed KEY DELAY_MS
--       one key, and a pause of DELAY_MS before each request on a connection: the steady
--       client, whose rate stays under the limit (connections * 1000 / DELAY_MS per second at
--       most), so every answer is a 200 and its latency is what a well-behaved client sees.
--       wrk starts a request's clock after the pause, so the pause is not in the latency.
--
-- done() prints, always, one of:
--   flood.lua: distinct: keys sent: N, non-200 responses: B of R
--   flood.lua: cycle: K keys in turn, requests sent: N, non-200 responses: B of R
--   flood.lua: fixed: 1 key, requests sent: N, non-200 responses: B of R
-- and one line per non-200 status seen ("flood.lua: status 429: 12").

local threads = {}

function setup(thread)
    thread:set("id", #threads)
    table.insert(threads, thread)
end

-- Globals, read by done() through thread:get(): mode, sent, responses, non200, statuses.
function init(args)
    mode = args[1]
    sent, responses, non200, statuses = 0, 0, 0, {}
    if mode == "distinct" then
        quota = tonumber(args[2])
        done_file = args[3]
        if not quota or not done_file then error("usage: -- distinct COUNT DONE_FILE") end
    elseif mode == "cycle" then
        keys = tonumber(args[2])
        if not keys or keys < 1 then error("usage: -- cycle COUNT") end
    elseif mode == "fixed" then
        fixed = wrk.format(nil, nil, { ["x-key"] = args[2] })
        pause = tonumber(args[3])
        if not args[2] or not pause then error("usage: -- fixed KEY DELAY_MS") end
    else
        error("flood.lua: mode must be distinct, cycle or fixed")
    end
end

function delay()
    if mode == "fixed" then return pause end
    return 0
end

function request()
    if mode == "fixed" then
        sent = sent + 1
        return fixed
    end
    local key
    if mode == "distinct" then
        key = "flood-" .. id .. "-" .. sent
    else
        key = "cycle-" .. ((id * 7919 + sent) % keys)
    end
    sent = sent + 1
    return wrk.format(nil, nil, { ["x-key"] = key })
end

function response(status, headers, body)
    responses = responses + 1
    if status ~= 200 then
        non200 = non200 + 1
        local key = tostring(status)
        statuses[key] = (statuses[key] or 0) + 1
    end
    if mode == "distinct" and responses == quota then
        local f = io.open(done_file, "w")
        if f then f:write(responses, "\n"); f:close() end
        wrk.thread:stop()
    end
end

function done(summary, latency, requests)
    local sent_all, bad, total, by_status, m = 0, 0, 0, {}, "?"
    for _, thread in ipairs(threads) do
        m = thread:get("mode")
        sent_all = sent_all + thread:get("sent")
        bad = bad + thread:get("non200")
        total = total + thread:get("responses")
        for status, n in pairs(thread:get("statuses")) do
            by_status[status] = (by_status[status] or 0) + n
        end
    end
    local what
    if m == "distinct" then
        what = string.format("keys sent: %d", sent_all)
    elseif m == "cycle" then
        what = string.format("%d keys in turn, requests sent: %d", threads[1]:get("keys"), sent_all)
    else
        what = string.format("1 key, requests sent: %d", sent_all)
    end
    io.write(string.format("flood.lua: %s: %s, non-200 responses: %d of %d\n", m, what, bad, total))
    for status, n in pairs(by_status) do
        io.write(string.format("flood.lua: status %s: %d\n", status, n))
    end
end
