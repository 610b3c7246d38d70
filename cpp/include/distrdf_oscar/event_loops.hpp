// When RDataFrame's event loops start, finish their just-in-time compilation and end, as ROOT's
// own log (channel "ROOT.RDF", level Info) reports them: the phases a mapper's timeline needs and
// DistRDF's mapper does not expose.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace dro {

// (phase, epoch seconds); phase is "loop_started", "jitted" or "loop_ended".
using LoopMark = std::pair<std::string, double>;

// Install, once per process (later calls do nothing), a handler in front of ROOT's log manager that records these
// marks. RDataFrame messages of a level above `shown` (the channel's verbosity before the caller raised it to Info) are
// recorded but not passed on, so the function's output stays as it was.
void watch_event_loops(int shown);

// The marks recorded since the last call, oldest first.
std::vector<LoopMark> take_event_loop_marks();

} // namespace dro
