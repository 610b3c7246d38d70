#include "distrdf_oscar/event_loops.hpp"

#include <ROOT/RLogger.hxx>

#include <chrono>
#include <memory>
#include <mutex>

namespace dro {
namespace {

// The messages of RLoopManager (ROOT 6.40's RLoopManager.cxx) that delimit the phases; a run
// whose graph needs no JIT says "Nothing to jit", and jitted nodes are built by deferred calls.
struct Pattern {
   const char *prefix;
   const char *phase;
};
constexpr Pattern kPatterns[] = {
    {"Starting event loop number", "loop_started"},
    {"Just-in-time compilation phase completed", "jitted"},
    {"Nothing to jit and execute", "jitted"},
    {"Finished event loop number", "loop_ended"},
};

bool has_deferred_suffix(const std::string &message)
{
   // "<n> deferred calls completed in ..." follows the JIT and ends it.
   return message.find(" deferred calls completed") != std::string::npos;
}

class LoopLog : public ROOT::RLogHandler {
public:
   explicit LoopLog(int shown) : fShown(shown) {}

   bool Emit(const ROOT::RLogEntry &entry) override
   {
      if (entry.fChannel == nullptr || entry.fChannel->GetName() != "ROOT.RDF")
         return true;
      const char *phase = nullptr;
      for (const auto &p : kPatterns) {
         if (entry.fMessage.rfind(p.prefix, 0) == 0) {
            phase = p.phase;
            break;
         }
      }
      if (phase == nullptr && has_deferred_suffix(entry.fMessage))
         phase = "jitted";
      if (phase != nullptr) {
         const double now = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
         std::lock_guard<std::mutex> lock(fMutex);
         fMarks.emplace_back(phase, now);
      }
      return static_cast<int>(entry.fLevel) <= fShown;
   }

   std::vector<LoopMark> Take()
   {
      std::lock_guard<std::mutex> lock(fMutex);
      std::vector<LoopMark> out;
      out.swap(fMarks);
      return out;
   }

private:
   const int fShown;
   std::mutex fMutex;
   std::vector<LoopMark> fMarks;
};

LoopLog *gLog = nullptr; // owned by ROOT's log manager, which lives as long as the process

} // namespace

void watch_event_loops(int shown)
{
   static std::once_flag installed;
   std::call_once(installed, [shown] {
      auto handler = std::make_unique<LoopLog>(shown);
      gLog = handler.get();
      ROOT::RLogManager::Get().PushFront(std::move(handler));
   });
}

std::vector<LoopMark> take_event_loop_marks()
{
   return gLog ? gLog->Take() : std::vector<LoopMark>{};
}

} // namespace dro
