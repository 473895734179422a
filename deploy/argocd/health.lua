-- Argo CD health check for dtsops.io/DtsJobReset, from its kstatus conditions
-- (Ready / Reconciling / Stalled). Lua 5.1 (Argo CD runs gopher-lua).
--   Healthy      Ready=True: the reset succeeded.
--   Degraded     Stalled=True: a human must act (terminal failure, retries exhausted, outcome
--                unknown, credentials not permitted, invalid spec); the message says why.
--   Progressing  no status yet, a spec the operator has not observed, or Reconciling=True
--                (pending, running, retrying).
-- Installed through argocd-cm (argocd-cm.yaml next to this file; a test checks they agree).
local hs = {}

local function condition(status, name)
  if status == nil or status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == name then
      return c
    end
  end
  return nil
end

local function text(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  if c ~= nil and c.reason ~= nil and c.reason ~= "" then
    return c.reason
  end
  return fallback
end

local status = obj.status
if status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to pick up the reset"
  return hs
end

local generation = nil
if obj.metadata ~= nil then
  generation = obj.metadata.generation
end
if generation ~= nil and status.observedGeneration ~= nil and status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local stalled = condition(status, "Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = text(stalled, "Stalled")
  return hs
end

local ready = condition(status, "Ready")
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = text(ready, "Reset succeeded")
  return hs
end

local reconciling = condition(status, "Reconciling")
hs.status = "Progressing"
if reconciling ~= nil and reconciling.status == "True" then
  hs.message = text(reconciling, "Reconciling")
else
  hs.message = "Waiting for the operator"
end
return hs
