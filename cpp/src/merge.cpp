#include "distrdf_oscar/merge.hpp"

#include <TClass.h>
#include <TDirectory.h>
#include <TEfficiency.h>
#include <TFile.h>
#include <TFileMergeInfo.h>
#include <TGraph2D.h>
#include <TH1.h>
#include <TKey.h>
#include <TList.h>
#include <TROOT.h>
#include <TTree.h>

#include <sched.h>
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <unordered_set>

namespace fs = std::filesystem;

namespace dro {

const char *to_string(MergeError::Kind kind) noexcept
{
   switch (kind) {
   case MergeError::Kind::Input: return "input";
   case MergeError::Kind::Mismatch: return "mismatch";
   case MergeError::Kind::Output: return "output";
   case MergeError::Kind::Write: return "write";
   }
   return "unknown";
}

std::string root_version()
{
   return gROOT->GetVersion();
}

namespace {

using Kind = MergeError::Kind;

std::string q(std::string_view s)
{
   return "'" + std::string(s) + "'";
}

// A path ROOT reads through a plugin (root://, http://, ...) rather than the local file system.
bool is_remote(const std::string &path)
{
   const auto scheme = path.find("://");
   return scheme != std::string::npos && path.compare(0, scheme, "file") != 0;
}

std::string local_path(const std::string &path)
{
   if (path.rfind("file://", 0) == 0)
      return path.substr(7);
   if (path.rfind("file:", 0) == 0)
      return path.substr(5);
   return path;
}

enum class EntryKind { Directory, Tree, Object };

// One key (highest cycle) of an input, identified by its path inside the file.
struct Entry {
   std::string path;   // "dir/sub/name"
   std::string parent; // "dir/sub"; "" is the top directory
   std::string name;
   std::string title; // written for directories, which are re-created rather than merged
   TClass *cls = nullptr;
   EntryKind kind = EntryKind::Object;
   std::unique_ptr<TObject> object; // read into memory for EntryKind::Object only
};

// The first input defines the layout every other input must match.
struct Layout {
   std::vector<Entry> entries;
   std::unordered_map<std::string, std::size_t> index; // by path
   std::size_t trees = 0;
   std::size_t excluded = 0;
};

// Objects of every input for each layout entry.
class ObjectTable {
public:
   ObjectTable(std::size_t entries, std::size_t inputs) : fInputs(inputs), fCells(entries * inputs) {}
   std::unique_ptr<TObject> &at(std::size_t entry, std::size_t input) { return fCells[entry * fInputs + input]; }
   void release(std::size_t entry)
   {
      for (std::size_t i = 0; i < fInputs; ++i)
         at(entry, i).reset();
   }

private:
   std::size_t fInputs;
   std::vector<std::unique_ptr<TObject>> fCells;
};

// Keeps at most a budget of inputs open; files whose objects are already in memory are closed
// early so that a K=1024 merge does not exhaust file descriptors.
class InputFiles {
public:
   explicit InputFiles(const std::vector<std::string> &urls)
       : fUrls(urls), fFiles(urls.size()), fCompression(urls.size(), -1)
   {
   }

   TFile *open(std::size_t i)
   {
      if (!fFiles[i]) {
         const std::string &url = fUrls[i];
         // Local files skip TFile::Open's plugin lookup, a measurable cost per input.
         std::unique_ptr<TFile> file(is_remote(url) ? TFile::Open(url.c_str(), "READ")
                                                    : new TFile(local_path(url).c_str(), "READ"));
         if (!file || file->IsZombie()) {
            check_input(url); // a precise reason when there is one
            throw MergeError(Kind::Input, "cannot open input " + q(url) + " as a ROOT file");
         }
         fCompression[i] = file->GetCompressionSettings();
         fFiles[i] = std::move(file);
      }
      return fFiles[i].get();
   }
   void close(std::size_t i) { fFiles[i].reset(); }
   // As recorded when the input was last opened.
   int compression(std::size_t i) const { return fCompression[i]; }

private:
   const std::vector<std::string> &fUrls;
   std::vector<std::unique_ptr<TFile>> fFiles;
   std::vector<int> fCompression;
};

// Raises the soft descriptor limit to the hard one (reading many inputs with trees needs them
// all open at once) and returns how many inputs may be open together.
std::size_t open_file_budget()
{
   rlimit lim{};
   if (getrlimit(RLIMIT_NOFILE, &lim) != 0)
      return 256;
   if (lim.rlim_cur < lim.rlim_max) {
      rlimit raised = lim;
      raised.rlim_cur = lim.rlim_max;
      if (setrlimit(RLIMIT_NOFILE, &raised) == 0)
         lim = raised;
   }
   const double soft = lim.rlim_cur == RLIM_INFINITY ? 1e6 : static_cast<double>(lim.rlim_cur);
   // Leave room for the output, ROOT's own files and whatever the host process holds.
   return static_cast<std::size_t>(std::max(16.0, std::min(soft - 128.0, soft * 0.75)));
}

// The CPU limit of the container (cgroup v2 cpu.max, else v1 CFS quota), or 0 when unlimited.
double cgroup_cpu_limit()
{
   std::ifstream v2("/sys/fs/cgroup/cpu.max");
   std::string quota;
   double period = 0;
   if (v2 >> quota >> period)
      return quota != "max" && period > 0 ? std::stod(quota) / period : 0;
   std::ifstream v1_quota("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"), v1_period("/sys/fs/cgroup/cpu/cpu.cfs_period_us");
   double q = -1;
   if (v1_quota >> q && v1_period >> period && q > 0 && period > 0)
      return q / period;
   return 0;
}

// CPUs this process may use: the affinity mask, capped by the container's CPU limit.
unsigned available_cpus()
{
   unsigned cpus = std::max(1u, std::thread::hardware_concurrency());
   cpu_set_t set;
   if (sched_getaffinity(0, sizeof(set), &set) == 0)
      cpus = std::max(1, CPU_COUNT(&set));
   if (const double limit = cgroup_cpu_limit(); limit > 0)
      cpus = std::min(cpus, std::max(1u, static_cast<unsigned>(std::ceil(limit))));
   return cpus;
}

// Reading a histogram registers it in the input directory, which would delete it when the input
// is closed; detach it per object (TH1::AddDirectory is process-wide and would race with other
// threads of the host process).
void detach_from_directory(TObject *obj)
{
   if (auto *h = dynamic_cast<TH1 *>(obj))
      h->SetDirectory(nullptr);
   else if (auto *g = dynamic_cast<TGraph2D *>(obj))
      g->SetDirectory(nullptr);
   else if (auto *e = dynamic_cast<TEfficiency *>(obj))
      e->SetDirectory(nullptr);
   else
      obj->Execute("SetDirectory", "(TDirectory*)nullptr");
   // Registered objects are flagged for gROOT's RecursiveRemove, which scans every open file on
   // deletion; our objects are referenced from nowhere else.
   obj->ResetBit(kMustCleanup);
}

class Scanner {
public:
   Scanner(const std::string &url, const std::unordered_set<std::string> &exclude) : fUrl(url), fExclude(exclude) {}

   std::vector<Entry> scan(TDirectory *top)
   {
      std::vector<Entry> entries;
      scan_directory(top, "", entries);
      return entries;
   }
   std::size_t excluded() const { return fExcluded; }

private:
   void scan_directory(TDirectory *dir, const std::string &parent, std::vector<Entry> &entries)
   {
      for (TKey *key : highest_cycles(dir)) {
         const char *name = key->GetName();
         if (parent.empty() && fExclude.count(name)) {
            ++fExcluded;
            continue;
         }
         // Process IDs are bookkeeping for TRef that ROOT rewrites itself (TFileMerger skips them too).
         if (std::strcmp(key->GetClassName(), "TProcessID") == 0)
            continue;
         Entry entry;
         entry.name = name;
         entry.parent = parent;
         entry.path = parent.empty() ? entry.name : parent + "/" + entry.name;
         entry.cls = TClass::GetClass(key->GetClassName());
         if (!entry.cls)
            throw MergeError(Kind::Mismatch, "key " + q(entry.path) + " in " + q(fUrl) + " has class " +
                                                 key->GetClassName() + ", which has no dictionary");
         if (entry.cls->InheritsFrom(TDirectory::Class())) {
            entry.kind = EntryKind::Directory;
            entry.title = key->GetTitle();
            entries.push_back(std::move(entry));
            const std::string path = entries.back().path;
            TDirectory *sub = dir->GetDirectory(name);
            if (!sub)
               throw MergeError(Kind::Input, "cannot read directory " + q(path) + " of " + q(fUrl));
            scan_directory(sub, path, entries);
            continue;
         }
         if (entry.cls->InheritsFrom(TTree::Class())) {
            entry.kind = EntryKind::Tree;
         } else {
            check_mergeable(entry);
            entry.object.reset(key->ReadObj());
            if (!entry.object)
               throw MergeError(Kind::Input,
                                "cannot read key " + q(entry.path) + " (" + entry.cls->GetName() + ") from " + q(fUrl));
            if (entry.cls->GetDirectoryAutoAdd())
               detach_from_directory(entry.object.get());
         }
         entries.push_back(std::move(entry));
      }
   }

   void check_mergeable(const Entry &entry) const
   {
      if (!entry.cls->IsTObject() || !entry.cls->GetMerge())
         throw MergeError(Kind::Mismatch, "key " + q(entry.path) + " in " + q(fUrl) + " has class " +
                                              entry.cls->GetName() + ", which has no merge function");
   }

   // Only the highest cycle of each name is merged; older cycles are superseded snapshots.
   static std::vector<TKey *> highest_cycles(TDirectory *dir)
   {
      std::vector<TKey *> keys;
      std::unordered_map<std::string_view, std::size_t> position;
      for (TObject *obj : *dir->GetListOfKeys()) {
         auto *key = static_cast<TKey *>(obj);
         auto [it, inserted] = position.emplace(key->GetName(), keys.size());
         if (inserted)
            keys.push_back(key);
         else if (key->GetCycle() > keys[it->second]->GetCycle())
            keys[it->second] = key;
      }
      return keys;
   }

   const std::string &fUrl;
   const std::unordered_set<std::string> &fExclude;
   std::size_t fExcluded = 0;
};

// Matches the keys of input `i` against the layout and moves its objects into the table.
void match_input(const Layout &layout, std::vector<Entry> &entries, std::size_t i, const std::string &url,
                 const std::string &first_url, ObjectTable &table)
{
   std::vector<bool> seen(layout.entries.size(), false);
   for (std::size_t pos = 0; pos < entries.size(); ++pos) {
      Entry &entry = entries[pos];
      // Inputs written by the same code list their keys in the same order: avoid hashing.
      std::size_t j = pos;
      if (j >= layout.entries.size() || layout.entries[j].path != entry.path) {
         auto it = layout.index.find(entry.path);
         if (it == layout.index.end())
            throw MergeError(Kind::Mismatch, "key " + q(entry.path) + " (" + entry.cls->GetName() + ") of " + q(url) +
                                                 " is not in " + q(first_url));
         j = it->second;
      }
      const Entry &ref = layout.entries[j];
      if (ref.cls != entry.cls)
         throw MergeError(Kind::Mismatch, "key " + q(entry.path) + " has class " + entry.cls->GetName() + " in " +
                                              q(url) + " but " + ref.cls->GetName() + " in " + q(first_url));
      seen[j] = true;
      if (entry.object)
         table.at(j, i) = std::move(entry.object);
   }
   for (std::size_t j = 0; j < seen.size(); ++j)
      if (!seen[j])
         throw MergeError(Kind::Mismatch, "key " + q(layout.entries[j].path) + " (" + layout.entries[j].cls->GetName() +
                                              ") of " + q(first_url) + " is missing in " + q(url));
}

// The output file, removed again unless the merge commits it.
class Output {
public:
   Output(const std::string &url, bool overwrite, int compression) : fUrl(url)
   {
      const int settings = compression < 0 ? ROOT::RCompressionSetting::EDefaults::kUseCompiledDefault : compression;
      fFile.reset(TFile::Open(url.c_str(), overwrite ? "RECREATE" : "CREATE", "", settings));
      if (!fFile || fFile->IsZombie()) {
         fFile.reset();
         throw MergeError(Kind::Write, "cannot create output " + q(url));
      }
      fCreated = true;
   }
   Output(const Output &) = delete;
   Output &operator=(const Output &) = delete;
   ~Output()
   {
      if (fCommitted || !fCreated)
         return;
      fFile.reset();
      // Only ever a file we created or truncated; never, say, a device the caller pointed us at.
      std::error_code ec;
      if (!is_remote(fUrl) && fs::is_regular_file(fs::symlink_status(local_path(fUrl), ec)))
         fs::remove(local_path(fUrl), ec);
   }

   TFile *file() { return fFile.get(); }

   void check(const std::string &what)
   {
      if (fFile->TestBit(TFile::kWriteError))
         throw MergeError(Kind::Write, "writing " + what + " to " + q(fUrl) + " failed (disk full?)");
   }

   std::uint64_t commit()
   {
      fFile->Close();
      check("the directory structure");
      std::uint64_t bytes = static_cast<std::uint64_t>(fFile->GetEND());
      fFile.reset();
      if (!is_remote(fUrl)) {
         std::error_code ec;
         bytes = fs::file_size(local_path(fUrl), ec);
         if (ec)
            throw MergeError(Kind::Write, "output " + q(fUrl) + " vanished after closing: " + ec.message());
      }
      fCommitted = true;
      return bytes;
   }

private:
   std::string fUrl;
   std::unique_ptr<TFile> fFile;
   bool fCreated = false;
   bool fCommitted = false;
};

void check_output_path(const std::string &output, const std::vector<std::string> &inputs, bool overwrite)
{
   if (is_remote(output))
      return;
   const fs::path out = local_path(output);
   std::error_code ec;
   if (!fs::exists(out, ec))
      return;
   if (!overwrite)
      throw MergeError(Kind::Output, "output " + q(output) + " already exists");
   for (const auto &in : inputs)
      if (!is_remote(in) && fs::equivalent(out, local_path(in), ec))
         throw MergeError(Kind::Output, "output " + q(output) + " is also an input");
}

bool same_branches(TTree *a, TTree *b)
{
   TObjArray *ba = a->GetListOfBranches();
   TObjArray *bb = b->GetListOfBranches();
   if (ba->GetEntriesFast() != bb->GetEntriesFast())
      return false;
   for (int k = 0; k < ba->GetEntriesFast(); ++k)
      if (std::strcmp(ba->At(k)->GetName(), bb->At(k)->GetName()) != 0)
         return false;
   return true;
}

// Runs task(i) for every i in [0, count) on `threads` threads (just the caller's when 1). Rethrows
// the exception of the lowest failing index, so the error reported does not depend on scheduling.
template <typename Task> void run_parallel(std::size_t count, unsigned threads, Task task)
{
   std::atomic<std::size_t> next{0};
   std::atomic<bool> failed{false};
   std::vector<std::exception_ptr> errors(count);
   auto work = [&] {
      TDirectory::TContext keep_gdirectory;
      for (std::size_t i = next++; i < count && !failed; i = next++) {
         try {
            task(i);
         } catch (...) {
            errors[i] = std::current_exception();
            failed = true;
         }
      }
   };
   if (threads <= 1 || count <= 1) {
      work();
   } else {
      ROOT::EnableThreadSafety();
      std::vector<std::thread> pool;
      for (unsigned t = 0; t < std::min<std::size_t>(threads, count); ++t)
         pool.emplace_back(work);
      for (auto &t : pool)
         t.join();
   }
   for (auto &e : errors)
      if (e)
         std::rethrow_exception(e);
}

class Merger {
public:
   Merger(const std::string &output, const std::vector<std::string> &inputs, const MergeOptions &opts)
       : fOutputUrl(output), fUrls(inputs), fOpts(opts), fInputs(inputs),
         fExclude(opts.exclude.begin(), opts.exclude.end())
   {
   }

   MergeSummary run()
   {
      const auto start = std::chrono::steady_clock::now();
      auto phase_done = [&, last = start](const char *what) mutable {
         const auto now = std::chrono::steady_clock::now();
         char buf[96];
         std::snprintf(buf, sizeof buf, "%s in %.3f s", what, std::chrono::duration<double>(now - last).count());
         log(buf);
         last = now;
      };
      check_output_path(fOutputUrl, fUrls, fOpts.overwrite);
      read_inputs();
      phase_done("read inputs");

      Output out(fOutputUrl, fOpts.overwrite, fOpts.compression);
      fTop = out.file();
      create_directories();
      merge_objects(out);
      phase_done("merged and wrote objects");
      merge_trees(out);
      if (fLayout.trees)
         phase_done("merged trees");
      fSummary.output_bytes = out.commit();
      phase_done("closed output");

      fSummary.inputs = fUrls.size();
      fSummary.excluded = fLayout.excluded;
      fSummary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      return fSummary;
   }

private:
   void log(const std::string &line) const
   {
      if (fOpts.log)
         fOpts.log(line);
   }

   // The first input defines the layout; the others are read (in parallel when allowed) and matched.
   void read_inputs()
   {
      const std::size_t n = fUrls.size();
      {
         Scanner scanner(fUrls[0], fExclude);
         fLayout.entries = scanner.scan(fInputs.open(0));
         fLayout.excluded = scanner.excluded();
      }
      fTable = std::make_unique<ObjectTable>(fLayout.entries.size(), n);
      for (std::size_t j = 0; j < fLayout.entries.size(); ++j) {
         Entry &e = fLayout.entries[j];
         fLayout.index.emplace(e.path, j);
         if (e.kind == EntryKind::Tree)
            ++fLayout.trees;
         fTable->at(j, 0) = std::move(e.object);
      }
      fKeepTreeFilesOpen = fLayout.trees > 0 && n <= open_file_budget();
      release_input(0);

      const unsigned threads = worker_threads(n - 1);
      log("reading " + std::to_string(n) + " inputs with " + std::to_string(threads) + " thread(s)");
      run_parallel(n - 1, threads, [&](std::size_t k) {
         const std::size_t i = k + 1;
         Scanner scanner(fUrls[i], fExclude);
         std::vector<Entry> entries = scanner.scan(fInputs.open(i));
         match_input(fLayout, entries, i, fUrls[i], fUrls[0], *fTable);
         release_input(i);
      });
   }

   unsigned worker_threads(std::size_t tasks) const
   {
      const unsigned wanted = fOpts.threads > 0 ? static_cast<unsigned>(fOpts.threads) : std::min(8u, available_cpus());
      return static_cast<unsigned>(std::max<std::size_t>(1, std::min<std::size_t>(wanted, tasks)));
   }

   // Files without trees hold nothing we still need once their objects are in memory.
   void release_input(std::size_t i)
   {
      if (fLayout.trees == 0 || !fKeepTreeFilesOpen)
         fInputs.close(i);
   }

   void create_directories()
   {
      for (const Entry &e : fLayout.entries) {
         if (e.kind != EntryKind::Directory)
            continue;
         TDirectory *dir = directory(e.parent)->mkdir(e.name.c_str(), e.title.c_str());
         if (!dir)
            throw MergeError(Kind::Write, "cannot create directory " + q(e.path) + " in " + q(fOutputUrl));
         fDirs[e.path] = dir;
         ++fSummary.directories;
      }
   }

   TDirectory *directory(const std::string &path)
   {
      return path.empty() ? static_cast<TDirectory *>(fTop) : fDirs.at(path);
   }

   // Keys are merged concurrently (each with its one Merge call); TFile writes stay sequential.
   void merge_objects(Output &out)
   {
      const std::size_t n = fUrls.size();
      std::vector<std::size_t> keys;
      for (std::size_t j = 0; j < fLayout.entries.size(); ++j)
         if (fLayout.entries[j].kind == EntryKind::Object)
            keys.push_back(j);
      run_parallel(keys.size(), worker_threads(keys.size()), [&](std::size_t k) {
         const std::size_t j = keys[k];
         const Entry &e = fLayout.entries[j];
         TList others;
         for (std::size_t i = 1; i < n; ++i)
            others.Add(fTable->at(j, i).get());
         TFileMergeInfo info(directory(e.parent));
         const Long64_t rc = e.cls->GetMerge()(fTable->at(j, 0).get(), &others, &info);
         others.Clear("nodelete");

         if (rc < 0)
            throw MergeError(Kind::Mismatch, "merging key " + q(e.path) + " (" + e.cls->GetName() + ") of " +
                                                 std::to_string(n) + " inputs (" + q(fUrls[0]) +
                                                 ", ...) failed: the objects are incompatible, e.g. in binning");
      });
      for (std::size_t j : keys) {
         const Entry &e = fLayout.entries[j];
         const std::string what = "key " + q(e.path) + " (" + e.cls->GetName() + ")";
         if (directory(e.parent)->WriteTObject(fTable->at(j, 0).get(), e.name.c_str()) <= 0)
            throw MergeError(Kind::Write, "writing " + what + " to " + q(fOutputUrl) + " failed");
         out.check(what);
         fTable->release(j);
         ++fSummary.objects;
         log("merged " + what + " from " + std::to_string(n) + " inputs");
      }
   }

   // Baskets can be copied without recompression only when every input uses the output's setting.
   bool baskets_copyable() const
   {
      const int target = fTop->GetCompressionSettings();
      for (std::size_t i = 0; i < fUrls.size(); ++i)
         if (fInputs.compression(i) != target)
            return false;
      return true;
   }

   void merge_trees(Output &out)
   {
      const std::size_t n = fUrls.size();
      // Normally one Merge call per tree; more only when the inputs exceed the open-file budget.
      const std::size_t chunk = fKeepTreeFilesOpen ? n : std::max<std::size_t>(2, open_file_budget());
      const bool fast = baskets_copyable();
      for (const Entry &e : fLayout.entries) {
         if (e.kind != EntryKind::Tree)
            continue;
         const std::string what = "tree " + q(e.path) + " (" + e.cls->GetName() + ")";
         TDirectory *dir = directory(e.parent);
         TFileMergeInfo info(dir);
         if (fast)
            info.fOptions = "fast";
         std::unique_ptr<TTree> target;
         for (std::size_t begin = 0; begin < n; begin += chunk) {
            const std::size_t end = std::min(n, begin + chunk);
            std::vector<std::unique_ptr<TTree>> trees;
            TList others;
            for (std::size_t i = begin; i < end; ++i) {
               std::unique_ptr<TTree> tree = read_tree(i, e);
               if (!target) {
                  target = std::move(tree);
                  continue;
               }
               if (!same_branches(target.get(), tree.get()))
                  throw MergeError(Kind::Mismatch,
                                   what + " has other branches in " + q(fUrls[i]) + " than in " + q(fUrls[0]));
               others.Add(tree.get());
               trees.push_back(std::move(tree));
            }
            const Long64_t rc = target->Merge(&others, &info);
            others.Clear("nodelete");
            info.fIsFirst = kFALSE;
            if (rc < 0)
               throw MergeError(Kind::Mismatch, "merging " + what + " failed for inputs " + q(fUrls[begin]) + " to " +
                                                    q(fUrls[end - 1]));
            out.check(what);
            trees.clear();
            if (!fKeepTreeFilesOpen)
               for (std::size_t i = begin; i < end; ++i)
                  fInputs.close(i);
         }
         fSummary.tree_entries += target->GetEntries();
         {
            TDirectory::TContext into(dir);
            // Merging may already have written a key for the tree: replace it.
            if (target->Write(e.name.c_str(), TObject::kOverwrite) <= 0)
               throw MergeError(Kind::Write, "writing " + what + " to " + q(fOutputUrl) + " failed");
         }
         out.check(what);
         target.reset();
         ++fSummary.trees;
         ++fSummary.objects;
         log("merged " + what + " from " + std::to_string(n) + " inputs");
      }
      if (fKeepTreeFilesOpen)
         for (std::size_t i = 0; i < n; ++i)
            fInputs.close(i);
   }

   std::unique_ptr<TTree> read_tree(std::size_t i, const Entry &e)
   {
      TFile *file = fInputs.open(i);
      TDirectory *dir = e.parent.empty() ? file : file->GetDirectory(e.parent.c_str());
      TKey *key = dir ? dir->GetKey(e.name.c_str()) : nullptr;
      std::unique_ptr<TObject> obj(key ? key->ReadObj() : nullptr);
      auto *tree = dynamic_cast<TTree *>(obj.get());
      if (!tree)
         throw MergeError(Kind::Input, "cannot read tree " + q(e.path) + " from " + q(fUrls[i]));
      obj.release();
      return std::unique_ptr<TTree>(tree);
   }

   std::string fOutputUrl;
   const std::vector<std::string> &fUrls;
   const MergeOptions &fOpts;
   InputFiles fInputs;
   std::unordered_set<std::string> fExclude;
   Layout fLayout;
   std::unique_ptr<ObjectTable> fTable;
   bool fKeepTreeFilesOpen = false;
   TFile *fTop = nullptr;
   std::unordered_map<std::string, TDirectory *> fDirs;
   MergeSummary fSummary;
};

} // namespace

void check_input(const std::string &url)
{
   if (is_remote(url))
      return;
   const std::string path = local_path(url);
   std::error_code ec;
   const auto status = fs::status(path, ec);
   if (!fs::exists(status))
      throw MergeError(Kind::Input, "input " + q(url) + " does not exist");
   if (fs::is_directory(status))
      throw MergeError(Kind::Input, "input " + q(url) + " is a directory");
   std::ifstream in(path, std::ios::binary);
   if (!in)
      throw MergeError(Kind::Input, "cannot read input " + q(url) + ": " + std::strerror(errno));
   char magic[4] = {};
   if (!in.read(magic, sizeof magic) || std::memcmp(magic, "root", sizeof magic) != 0)
      throw MergeError(Kind::Input, "input " + q(url) + " is not a ROOT file");
}

MergeSummary merge_files(const std::string &output, const std::vector<std::string> &inputs, const MergeOptions &opts)
{
   if (inputs.empty())
      throw MergeError(Kind::Input, "no input files to merge into " + q(output));
   // Neither the caller's gDirectory nor its current file may change under it.
   TDirectory::TContext keep_gdirectory;
   return Merger(output, inputs, opts).run();
}

} // namespace dro
