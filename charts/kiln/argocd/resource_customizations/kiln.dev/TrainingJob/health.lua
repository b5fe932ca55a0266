-- Argo CD health of a kiln.dev/v1alpha1 TrainingJob, from its conditions:
--   no status yet, or status.observedGeneration < metadata.generation -> Progressing
--   Succeeded True -> Healthy; Succeeded False (or Failed True) -> Degraded with its message
--   Suspended True (spec.suspend) -> Suspended
--   Interrupted True (a spot reclaim; the job restarts from its checkpoint) -> Progressing
--   otherwise (Succeeded Unknown: pods starting, downloading, training) -> Progressing

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

local status = obj.status
local succeeded = findCondition(status, "Succeeded")
local waiting = waitingMessage(obj, succeeded)
if waiting ~= nil then
  return health("Progressing", waiting)
end
if hasStatus(succeeded, "True") then
  return health("Healthy", messageOf(succeeded, "Succeeded"))
end
if hasStatus(succeeded, "False") then
  return health("Degraded", messageOf(succeeded, reasonOf(succeeded, "Failed")))
end
local failed = findCondition(status, "Failed")
if hasStatus(failed, "True") then
  return health("Degraded", messageOf(failed, reasonOf(failed, "Failed")))
end
local suspended = findCondition(status, "Suspended")
if hasStatus(suspended, "True") then
  return health("Suspended", messageOf(suspended, "Suspended"))
end
local interrupted = findCondition(status, "Interrupted")
if hasStatus(interrupted, "True") then
  return health("Progressing", messageOf(interrupted, "Interrupted; restarting from the newest checkpoint"))
end
return health("Progressing", messageOf(succeeded, messageOf(findCondition(status, "Running"), "In progress")))
