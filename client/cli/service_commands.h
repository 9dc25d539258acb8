// The `llmc` subcommands that talk to the compression service (submit, get, list, watch, cancel) and
// `llmc serve` (a coordinator and local workers in one process tree). See docs/service.md.
#pragma once

#include <memory>

#include <CLI/CLI.hpp>

namespace llmc::cli {

struct ServiceCommands;  // the parsed arguments of every service subcommand

// Adds submit, get, list, watch, cancel and serve to `app`. The returned object holds their arguments.
std::shared_ptr<ServiceCommands> AddServiceCommands(CLI::App& app);

// After app.parse: runs the service subcommand that was given, storing its exit status in *rc. Returns false
// when none of them was given.
bool RunServiceCommand(const ServiceCommands& cmds, int* rc);

}  // namespace llmc::cli
