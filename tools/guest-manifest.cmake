# Turns ctest's own list of tests (ctest --show-only=json-v1) into the
# manifest tools/guest-init.c runs, so that the guest runs exactly ctest's
# command lines, environments, timeouts and RUN_SERIAL, and each test's
# labels (its backend) reach the host's summary. CMake rather than a JSON
# tool: the build needs CMake anyway.
#
#   cmake -DJSON=tests.json -DOUT=manifest -DJOBS=1 -DTIMEOUT_SCALE=3 \
#         -DSLOWDOWN=50 -DLABELS=labels -P tools/guest-manifest.cmake
#
# Every timeout is ctest's (TIMEOUT, else the 120 s of check-cross's
# --timeout) times TIMEOUT_SCALE: the guest runs the tests under TCG, at
# about a hundredth of native speed on a busy 2-core host; a timeout is a
# bound on a hang, not a check, so scaling it weakens no test.
# SLOWDOWN reaches every test as WXTEST_SLOWDOWN (tests/wxtest_core.h):
# the stress loops run that many times fewer rounds, as under Valgrind.
# LABELS gets one line per test: "NAME LABEL" (LABEL "-" without one).
cmake_minimum_required(VERSION 3.19) # string(JSON)
foreach(var JSON OUT JOBS TIMEOUT_SCALE SLOWDOWN LABELS)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "guest-manifest.cmake: -D${var}= is missing")
  endif()
endforeach()

file(READ ${JSON} json)
string(JSON ntests LENGTH "${json}" tests)
set(manifest "jobs ${JOBS}\n")
set(labels "")
math(EXPR last "${ntests} - 1")
foreach(i RANGE ${last})
  string(JSON name GET "${json}" tests ${i} name)
  string(APPEND manifest "test ${name}\nenv WXTEST_SLOWDOWN=${SLOWDOWN}\n")
  set(label "-")
  set(timeout 120)
  string(JSON nprops LENGTH "${json}" tests ${i} properties)
  math(EXPR lastprop "${nprops} - 1")
  foreach(p RANGE ${lastprop})
    string(JSON key GET "${json}" tests ${i} properties ${p} name)
    string(JSON val GET "${json}" tests ${i} properties ${p} value)
    if(key STREQUAL "TIMEOUT")
      string(REGEX REPLACE "\\..*" "" timeout "${val}") # math() has no floats
    elseif(key STREQUAL "RUN_SERIAL" AND val)
      string(APPEND manifest "serial 1\n")
    elseif(key STREQUAL "WORKING_DIRECTORY")
      string(APPEND manifest "cwd ${val}\n")
    elseif(key STREQUAL "ENVIRONMENT" OR key STREQUAL "LABELS")
      string(JSON n LENGTH "${json}" tests ${i} properties ${p} value)
      math(EXPR lastv "${n} - 1")
      foreach(v RANGE ${lastv})
        string(JSON item GET "${json}" tests ${i} properties ${p} value ${v})
        if(key STREQUAL "ENVIRONMENT")
          string(APPEND manifest "env ${item}\n")
        else()
          set(label ${item})
        endif()
      endforeach()
    elseif(key STREQUAL "SKIP_RETURN_CODE" AND val EQUAL 77)
      # tools/guest-init.c's EXIT_SKIPPED.
    else()
      # The guest would ignore it silently: say so here instead.
      message(FATAL_ERROR "guest-manifest.cmake: test ${name}: property "
        "${key} is not handled")
    endif()
  endforeach()
  math(EXPR timeout "${timeout} * ${TIMEOUT_SCALE}")
  string(APPEND manifest "timeout ${timeout}\n")
  string(JSON nargs LENGTH "${json}" tests ${i} command)
  math(EXPR lastarg "${nargs} - 1")
  foreach(a RANGE ${lastarg})
    string(JSON arg GET "${json}" tests ${i} command ${a})
    string(APPEND manifest "arg ${arg}\n")
  endforeach()
  string(APPEND manifest "run\n")
  string(APPEND labels "${name} ${label}\n")
endforeach()
file(WRITE ${OUT} "${manifest}")
file(WRITE ${LABELS} "${labels}")
