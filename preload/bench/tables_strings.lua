-- A table- and string-heavy Lua workload for `bench-harness c-programs` (run by lua5.4): string
-- building, table inserts and removes, gsub, concatenation, nested tables, sorting. Every step
-- draws from a fixed-seed generator written here (not math.random, whose algorithm may change),
-- and the printed checksum must equal the one from a run on glibc's malloc.
-- Usage: lua5.4 tables_strings.lua [rounds] [records per round]

local rounds = tonumber(arg and arg[1]) or 6
local count = tonumber(arg and arg[2]) or 20000
local state = 12345
local function rand(n)
  -- A 31-bit linear congruential generator: deterministic on every Lua 5.4 build.
  state = (state * 1103515245 + 12345) % 2147483648
  return state % n
end

local function checksum(s, h)
  -- Folds a string into h (FNV-like, kept in 32 bits).
  for i = 1, #s, 7 do
    h = ((h ~ s:byte(i)) * 16777619) & 0xffffffff
  end
  return (h + #s) & 0xffffffff
end

local words = {}
for i = 1, 500 do
  local parts = {}
  for j = 1, 3 + rand(8) do
    parts[#parts + 1] = string.char(97 + rand(26))
  end
  words[i] = table.concat(parts)
end

local h = 0
for round = 1, rounds do
  -- Records: nested tables with string fields, built and partly removed.
  local records = {}
  for i = 1, count do
    local w = words[1 + rand(#words)]
    records[#records + 1] = {
      id = i,
      name = w .. "-" .. i,
      tags = { w, words[1 + rand(#words)], tostring(rand(1000)) },
      info = { depth = { value = rand(100000), label = string.rep(w, 1 + rand(4)) } },
    }
    if rand(4) == 0 and #records > 10 then
      table.remove(records, 1 + rand(#records))
    end
  end
  -- A text built by pieces, then rewritten with gsub.
  local pieces = {}
  for _, r in ipairs(records) do
    pieces[#pieces + 1] = r.name .. ":" .. r.info.depth.label .. "=" .. r.info.depth.value
  end
  local text = table.concat(pieces, ";")
  text = text:gsub("(%a+)%-(%d+)", "%2<%1>")
  local vowels
  text, vowels = text:gsub("[aeiou]", string.upper)
  h = checksum(text, h) ~ vowels
  -- An index by word: table of lists, grown and sorted.
  local index = {}
  for _, r in ipairs(records) do
    for _, t in ipairs(r.tags) do
      local list = index[t]
      if not list then
        list = {}
        index[t] = list
      end
      list[#list + 1] = r.id
    end
  end
  local keys = {}
  for k in pairs(index) do
    keys[#keys + 1] = k
  end
  table.sort(keys)
  for i = 1, #keys, 13 do
    local list = index[keys[i]]
    table.sort(list, function(a, b) return a > b end)
    h = checksum(keys[i] .. #list .. (list[1] or 0), h)
  end
  -- Many short-lived strings: formatting and repeated concatenation.
  local acc = ""
  for i = 1, count // 7 do
    acc = acc .. string.format("%05d", rand(100000))
    if #acc > 2000 then
      h = checksum(acc, h)
      acc = acc:sub(-100)
    end
  end
  h = checksum(acc .. round, h)
end
print(string.format("lua rounds %d checksum %08x", rounds, h))
