// Typed errors thrown by core. Messages name the file and the problem, so a user can act on them.
#pragma once

#include <stdexcept>
#include <string>

namespace quantscope {

// `what` with each NUL byte shown as \0: what() is read as a C string, and a NUL in a quoted name
// (a metadata string of a file) ended the message there, closing quote and all (tester 21).
inline std::string visibleNuls(std::string what)
{
    for (std::size_t i = what.find('\0'); i != std::string::npos; i = what.find('\0', i + 2)) what.replace(i, 1, "\\0");
    return what;
}

// Base of every error core throws on purpose.
class Error : public std::runtime_error {
public:
    explicit Error(const std::string& what) : std::runtime_error(visibleNuls(what)) {}
    explicit Error(const char* what) : std::runtime_error(what) {}
};

// A file could not be opened, read or written (missing, permissions, disk full).
class IoError : public Error {
public:
    using Error::Error;
};

// A file was read but its content is not what the format says (bad magic, sizes, CRC...).
class FormatError : public Error {
public:
    using Error::Error;
};

// A configuration or argument is invalid (unknown model name, bad shape, negative epochs...).
class ConfigError : public Error {
public:
    using Error::Error;
};

// Training diverged or met non-finite numbers where it cannot recover.
class NumericError : public Error {
public:
    using Error::Error;
};

} // namespace quantscope
