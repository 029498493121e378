-- Unique Idempotency-Key and order id per request, one tenant (alice, tenant-a).
local threads = {}
local next_id = 0
function setup(thread)
  thread:set("tid", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end
function init(args)
  token = os.getenv("TOKEN")
  n = 0
  codes = {}
end
function request()
  n = n + 1
  local id = tid .. "-" .. n
  local from, to = "acc-1", "acc-2"
  if n % 2 == 0 then from, to = "acc-2", "acc-1" end
  local body = '{"from":"' .. from .. '","to":"' .. to .. '","amount":"0.01"}'
  return wrk.format("POST", "/v1/transfer", {
    ["authorization"] = "Bearer " .. token,
    ["x-tenant-namespace"] = "tenant-a",
    ["x-order-id"] = "flood-" .. id,
    ["idempotency-key"] = "flood-" .. id,
    ["content-type"] = "application/json",
  }, body)
end
function response(status, headers, body)
  codes[status] = (codes[status] or 0) + 1
end
function done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    local c = t:get("codes")
    for k, v in pairs(c) do total[k] = (total[k] or 0) + v end
  end
  for k, v in pairs(total) do io.write(string.format("status %d: %d\n", k, v)) end
end
