// N-way merge of ROOT files holding partial results of a distributed RDataFrame.
#pragma once

#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

namespace dro {

struct MergeOptions {
   // Top-level key names that are neither merged nor copied (the caller handles them).
   std::vector<std::string> exclude;
   // Replace an existing output file instead of refusing it.
   bool overwrite = false;
   // ROOT compression setting (algorithm * 100 + level); -1 = ROOT's default for new files.
   int compression = -1;
   // Threads reading the inputs: 0 = one per CPU available to the process (at most 8), 1 = none.
   // More than one enables ROOT's thread safety (ROOT::EnableThreadSafety) for the process.
   int threads = 0;
   // Receives one line per merged key and per phase; empty = silent.
   std::function<void(const std::string &)> log;
};

struct MergeSummary {
   std::size_t inputs = 0;
   std::size_t objects = 0; // merged keys, trees included, directories not
   std::size_t trees = 0;
   std::size_t directories = 0;
   std::size_t excluded = 0; // top-level keys skipped because of MergeOptions::exclude
   std::int64_t tree_entries = 0;
   std::uint64_t output_bytes = 0;
   double seconds = 0.0;
};

class MergeError : public std::runtime_error {
public:
   enum class Kind {
      Input,    // an input is missing, unreadable or not a ROOT file
      Mismatch, // inputs disagree (keys, classes, tree branches) or a class cannot be merged
      Output,   // the output path is refused: it exists (without overwrite) or is one of the inputs
      Write,    // creating or writing the output failed (permissions, disk full, ...)
   };
   MergeError(Kind kind, const std::string &message) : std::runtime_error(message), fKind(kind) {}
   Kind kind() const noexcept { return fKind; }

private:
   Kind fKind;
};

// "input", "mismatch", "output" or "write".
const char *to_string(MergeError::Kind kind) noexcept;

// Merges `inputs` into a new ROOT file `output`.
//
// Every key (highest cycle only) must be present in every input with the same class. Objects are
// read into memory and merged with ONE call of their class's merge function per key; trees are
// concatenated into the matching directory of the output; directories recurse. Anything that
// cannot be merged is a MergeError naming file, key path and class; the partial output is removed.
MergeSummary merge_files(const std::string &output, const std::vector<std::string> &inputs,
                         const MergeOptions &opts = {});

// Throws MergeError(Kind::Input) unless `path` is a readable ROOT file. Remote URLs (root://...)
// are left to ROOT and always pass.
void check_input(const std::string &path);

std::string root_version();

} // namespace dro
