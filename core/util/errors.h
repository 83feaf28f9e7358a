// Typed errors thrown by core. Messages name the file and the problem, so a user can act on them.
#pragma once

#include <stdexcept>
#include <string>

namespace quantscope {

// Base of every error core throws on purpose.
class Error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
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
