-- Argo CD health check for optimodel.io/OptimizedModel (Lua 5.1, as Argo CD's gopher-lua runs).
-- Install: argocd-cm key resource.customizations.health.optimodel.io_OptimizedModel
-- (argocd-cm-patch.yaml beside this file carries this exact script; a test keeps them equal).
--
--   Healthy      Ready=True for the current generation: status.observedGeneration equals
--                metadata.generation, and so does the Ready condition's observedGeneration.
--   Degraded     for the current generation: Built=False with reason AccuracyBelowThreshold or
--                BuildFailed, Ready=False with reason InvalidSpec, or phase Failed.
--   Progressing  anything else: no status yet, building, deploying, or a status that still
--                describes an older generation.
local hs = {}

local generation = nil
if obj.metadata ~= nil then
  generation = obj.metadata.generation
end
local status = obj.status

local function condition(conditionType)
  if status == nil or status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == conditionType then
      return c
    end
  end
  return nil
end

-- A condition describes the current spec unless it says it observed another generation.
local function current(c)
  if c == nil then
    return false
  end
  return c.observedGeneration == nil or generation == nil or c.observedGeneration == generation
end

-- "Reason: message" of a condition, or the fallback when it has neither.
local function describe(c, fallback)
  if c == nil then
    return fallback
  end
  local reason = c.reason
  if reason == nil or reason == "" then
    reason = fallback
  end
  if c.message ~= nil and c.message ~= "" then
    return reason .. ": " .. c.message
  end
  return reason
end

if status == nil or status.observedGeneration == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the optimodel operator to observe this OptimizedModel"
  return hs
end

if generation ~= nil and status.observedGeneration ~= generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to act on generation " .. tostring(generation)
    .. " (status describes generation " .. tostring(status.observedGeneration) .. ")"
  return hs
end

local built = condition("Built")
local ready = condition("Ready")

if ready ~= nil and ready.status == "False" and ready.reason == "InvalidSpec" and current(ready) then
  hs.status = "Degraded"
  hs.message = describe(ready, "InvalidSpec")
  return hs
end

if built ~= nil and built.status == "False" and current(built)
    and (built.reason == "AccuracyBelowThreshold" or built.reason == "BuildFailed") then
  hs.status = "Degraded"
  hs.message = describe(built, built.reason)
  return hs
end

if status.phase == "Failed" then
  hs.status = "Degraded"
  hs.message = describe(ready, "The operator reports phase Failed")
  return hs
end

if ready ~= nil and ready.status == "True" and current(ready) then
  hs.status = "Healthy"
  hs.message = describe(ready, "Ready")
  local budget = condition("WithinBudget")
  if budget ~= nil and budget.status == "False" then
    hs.message = hs.message .. " (over budget: " .. describe(budget, "WithinBudget=False") .. ")"
  end
  return hs
end

hs.status = "Progressing"
local phase = status.phase
if phase == nil then
  phase = "Pending"
end
local latest = ready
if latest == nil or latest.status == "True" then
  latest = built
end
hs.message = describe(latest, phase)
if latest ~= nil then
  hs.message = phase .. ": " .. hs.message
end
return hs
