// rootmerge: the native n-way merge as a command, like hadd.
#include "distrdf_oscar/merge.hpp"

#include <TError.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <new>
#include <string>
#include <vector>

namespace {

enum ExitCode : int {
   kOk = 0,
   kInternal = 1,
   kUsage = 2,
   kInput = 3,
   kMismatch = 4,
   kWrite = 5,
};

const char *const kUsageText = R"(usage: rootmerge [-f] [-v] [-j THREADS] [-c SETTING] [-x NAME]... OUT IN...

Merge the ROOT files IN... into the new ROOT file OUT, n-way: every object is merged once from all
inputs (histograms, profiles, THn, graphs, TParameter, TStatistic, ...), trees are concatenated and
directories recurse. Every input must hold the same keys with the same classes.

options:
  -f                 overwrite OUT if it exists (never one of the inputs)
  -v                 print every merged key and the time of each phase to stderr
  -j THREADS         threads reading inputs and merging keys (default: one per available CPU,
                     at most 8)
  -c SETTING         compression of OUT, algorithm*100+level, e.g. 101 (zlib), 505 (zstd);
                     default: ROOT's default for new files
  -x NAME            skip the top-level key NAME (neither merged nor copied); repeatable
  -h, --help         show this help and exit
  --version          print the version of ROOT in use and exit

exit codes:
  0  merged
  1  internal error
  2  usage error (bad options, OUT exists without -f, OUT is also an input)
  3  input error (an input is missing, unreadable or not a ROOT file)
  4  merge mismatch (inputs with different keys or classes, a class that cannot be merged)
  5  write error (OUT cannot be created or written, e.g. disk full); OUT is removed
)";

int fail(int code, const std::string &message)
{
   std::cerr << "rootmerge: error: " << message << '\n';
   return code;
}

int usage_error(const std::string &message)
{
   fail(kUsage, message);
   std::cerr << "rootmerge: try 'rootmerge --help'\n";
   return kUsage;
}

int exit_code(dro::MergeError::Kind kind)
{
   switch (kind) {
   case dro::MergeError::Kind::Input: return kInput;
   case dro::MergeError::Kind::Mismatch: return kMismatch;
   case dro::MergeError::Kind::Output: return kUsage;
   case dro::MergeError::Kind::Write: return kWrite;
   }
   return kInternal;
}

std::string human_bytes(std::uint64_t bytes)
{
   const char *units[] = {"B", "kB", "MB", "GB", "TB"};
   double value = static_cast<double>(bytes);
   int unit = 0;
   while (value >= 1000 && unit < 4) {
      value /= 1000;
      ++unit;
   }
   char buf[32];
   std::snprintf(buf, sizeof buf, unit == 0 ? "%.0f %s" : "%.1f %s", value, units[unit]);
   return buf;
}

bool parse_int(const char *text, int &value)
{
   char *end = nullptr;
   const long v = std::strtol(text, &end, 10);
   if (!*text || *end || v < 0 || v > 1000000)
      return false;
   value = static_cast<int>(v);
   return true;
}

struct Args {
   dro::MergeOptions opts;
   bool verbose = false;
   std::string output;
   std::vector<std::string> inputs;
};

// Returns -1 when the arguments are usable, else the exit code.
int parse(int argc, char **argv, Args &args)
{
   std::vector<std::string> positional;
   bool options_done = false;
   for (int i = 1; i < argc; ++i) {
      const std::string arg = argv[i];
      if (options_done || arg.size() < 2 || arg[0] != '-') {
         positional.push_back(arg);
         continue;
      }
      auto value = [&]() -> const char * { return i + 1 < argc ? argv[++i] : nullptr; };
      if (arg == "--") {
         options_done = true;
      } else if (arg == "-h" || arg == "--help") {
         std::cout << kUsageText;
         return kOk;
      } else if (arg == "--version") {
         std::cout << "rootmerge (distrdf-oscar) with ROOT " << dro::root_version() << '\n';
         return kOk;
      } else if (arg == "-f") {
         args.opts.overwrite = true;
      } else if (arg == "-v") {
         args.verbose = true;
      } else if (arg == "-j" || arg == "-c") {
         const char *v = value();
         int number = 0;
         if (!v || !parse_int(v, number))
            return usage_error("option " + arg + " needs a non-negative number");
         (arg == "-j" ? args.opts.threads : args.opts.compression) = number;
      } else if (arg == "-x") {
         const char *v = value();
         if (!v)
            return usage_error("option -x needs a key name");
         args.opts.exclude.emplace_back(v);
      } else {
         return usage_error("unknown option " + arg);
      }
   }
   if (positional.size() < 2)
      return usage_error(positional.empty() ? "missing OUT and IN files" : "missing IN files");
   args.output = positional.front();
   args.inputs.assign(positional.begin() + 1, positional.end());
   return -1;
}

} // namespace

int main(int argc, char **argv)
{
   Args args;
   if (const int code = parse(argc, argv, args); code >= 0)
      return code;

   // ROOT's Info messages are noise here; warnings and errors still show.
   gErrorIgnoreLevel = kWarning;
   if (args.verbose)
      args.opts.log = [](const std::string &line) { std::cerr << "rootmerge: " << line << '\n'; };

   try {
      // All inputs are checked before OUT is created (merge_files reads them all first, too, but
      // this reports a missing file without ROOT's own messages).
      for (const auto &in : args.inputs)
         dro::check_input(in);
      const dro::MergeSummary s = dro::merge_files(args.output, args.inputs, args.opts);
      char secs[32];
      std::snprintf(secs, sizeof secs, "%.2f", s.seconds);
      std::cout << "rootmerge: merged " << s.inputs << (s.inputs == 1 ? " file, " : " files, ") << s.objects
                << (s.objects == 1 ? " object (" : " objects (") << s.trees << (s.trees == 1 ? " tree" : " trees")
                << ") into " << args.output << " (" << human_bytes(s.output_bytes) << ") in " << secs << " s\n";
      return kOk;
   } catch (const dro::MergeError &e) {
      std::string message = e.what();
      if (e.kind() == dro::MergeError::Kind::Output && !args.opts.overwrite)
         message += "; use -f to overwrite it";
      return fail(exit_code(e.kind()), message);
   } catch (const std::bad_alloc &) {
      return fail(kInternal, "out of memory");
   } catch (const std::exception &e) {
      return fail(kInternal, e.what());
   }
}
