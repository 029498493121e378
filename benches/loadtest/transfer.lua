-- wrk script for benches/loadtest/run.py: POST /v1/transfer with a new
-- Idempotency-Key (and order id) on every request. TOKEN comes from the
-- environment.
local token = os.getenv("TOKEN") or ""
local prefix = tostring(os.time()) .. "-" .. tostring(math.random(1, 1000000000))
local n = 0
local body = '{"from":"acc-1","to":"acc-2","amount":"1.00"}'

request = function()
  n = n + 1
  local key = prefix .. "-" .. n
  return wrk.format("POST", nil, {
    ["authorization"] = "Bearer " .. token,
    ["x-tenant-namespace"] = "tenant-a",
    ["x-order-id"] = key,
    ["idempotency-key"] = key,
    ["content-type"] = "application/json",
  }, body)
end
