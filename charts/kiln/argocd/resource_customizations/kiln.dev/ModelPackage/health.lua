-- Argo CD health of a kiln.dev/v1alpha1 ModelPackage, from its Ready condition
-- (reasons in operator/api/src/conditions.rs) and status.state:
--   no status yet, or status.observedGeneration < metadata.generation -> Progressing
--   Ready True (registered with its version) -> Healthy, whatever the approval:
--   approving is a person's decision, not a health problem
--   state Failed (e.g. the artifact's digest changed), or reason InvalidSpec,
--   ReferenceNotFound or SecretNotFound -> Degraded with the condition's message
--   otherwise (state Pending: the artifact is checked, a version assigned) -> Progressing

-- kiln:common begin (the same in every kiln.dev health.lua; charts/tests/argocd_health.py checks it)
-- Argo CD runs this with gopher-lua (Lua 5.1) and, for scripts from
-- argocd-cm, without the string and math libraries: base functions only.

-- The condition of this type in status.conditions, or nil.
local function findCondition(status, conditionType)
  if type(status) ~= "table" or type(status.conditions) ~= "table" then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if type(c) == "table" and c.type == conditionType then
      return c
    end
  end
  return nil
end

local function hasStatus(c, value)
  return c ~= nil and c.status == value
end

-- The condition's message, or fallback when it has none.
local function messageOf(c, fallback)
  if c ~= nil and type(c.message) == "string" and c.message ~= "" then
    return c.message
  end
  return fallback
end

-- A Progressing message while the status is missing or describes an older
-- spec than metadata.generation (as kstatus reads observedGeneration, on
-- the status and on its summary condition), else nil.
local function waitingMessage(obj, summary)
  local status = obj.status
  if type(status) ~= "table" or next(status) == nil then
    return "Waiting for the Kiln operator to report status"
  end
  local generation = nil
  if type(obj.metadata) == "table" then
    generation = obj.metadata.generation
  end
  if type(generation) ~= "number" then
    return nil
  end
  if type(status.observedGeneration) == "number" and status.observedGeneration < generation then
    return "Waiting for the operator to observe generation " .. tostring(generation)
  end
  if summary ~= nil and type(summary.observedGeneration) == "number" and summary.observedGeneration < generation then
    return "Waiting for the operator to observe generation " .. tostring(generation) .. " (the " .. summary.type .. " condition is older)"
  end
  return nil
end

-- The condition's reason, or fallback when it has none.
local function reasonOf(c, fallback)
  if c ~= nil and type(c.reason) == "string" and c.reason ~= "" then
    return c.reason
  end
  return fallback
end

local function health(status, message)
  return { status = status, message = message }
end
-- kiln:common end

local DEGRADED_REASONS = {
  InvalidSpec = true,
  ReferenceNotFound = true,
  SecretNotFound = true,
}

local status = obj.status
local ready = findCondition(status, "Ready")
local waiting = waitingMessage(obj, ready)
if waiting ~= nil then
  return health("Progressing", waiting)
end
if hasStatus(ready, "True") then
  return health("Healthy", messageOf(ready, "Registered"))
end
if status.state == "Failed" or DEGRADED_REASONS[reasonOf(ready, "")] then
  return health("Degraded", messageOf(ready, reasonOf(ready, "Registration failed")))
end
return health("Progressing", messageOf(ready, "Registering: checking the artifact and assigning a version"))
