# Writes the quantscope-cli(1) man page from the program's own --help texts, so the two never
# differ: cmake -DCLI=path/to/quantscope-cli -DOUT=quantscope-cli.1 -DVERSION=x.y.z -P make_man.cmake
# Each text goes into a section as preformatted lines (roff escapes applied).
function(help_of out)
  execute_process(COMMAND ${CLI} ${ARGN} --help OUTPUT_VARIABLE text RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "make_man: '${CLI} ${ARGN} --help' failed (${rc})")
  endif()
  string(REPLACE "\\" "\\e" text "${text}")
  # A line that starts with '.' or an apostrophe would be a roff request.
  string(REGEX REPLACE "(^|\n)([.'])" "\\1\\\\&\\2" text "${text}")
  set(${out} "${text}" PARENT_SCOPE)
endfunction()

string(TIMESTAMP today "%Y-%m-%d" UTC)
help_of(top)
set(page ".TH QUANTSCOPE-CLI 1 \"${today}\" \"QuantScope ${VERSION}\" \"User Commands\"\n")
string(APPEND page ".SH NAME\nquantscope-cli \\- low-precision training and quantization of neural networks\n")
string(APPEND page ".SH SYNOPSIS\n.B quantscope-cli\n\\fIcommand\\fR [\\fIoptions\\fR]\n")
string(APPEND page ".SH DESCRIPTION\n.nf\n${top}.fi\n")
foreach(cmd train eval info analyze)
  help_of(text ${cmd})
  string(TOUPPER "${cmd}" upper)
  string(APPEND page ".SH ${upper}\n.nf\n${text}.fi\n")
endforeach()
# The GUI, quantscope, has no page of its own: the README and docs/GUIDE.md describe it.
string(APPEND page ".SH SEE ALSO\n/usr/share/doc/quantscope/README.md (the window, the formats, every option),\n/usr/share/doc/quantscope/docs/GUIDE.md (a first session)\n")
file(WRITE ${OUT} "${page}")
# Debian installs man pages gzip-compressed (policy 12.1); -n keeps the build reproducible.
execute_process(COMMAND gzip -9nf -k ${OUT} RESULT_VARIABLE gz)
if(NOT gz EQUAL 0)
  message(FATAL_ERROR "make_man: gzip ${OUT} failed (${gz})")
endif()
