// rootmerge-bench: the core's n-way merge vs pairwise merging vs TFileMerger on synthetic partials.
#include "distrdf_oscar/merge.hpp"

#include <TError.h>
#include <TFile.h>
#include <TFileMerger.h>
#include <TH1D.h>
#include <TH2D.h>
#include <TKey.h>
#include <TList.h>
#include <TParameter.h>
#include <TRandom3.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

namespace fs = std::filesystem;

namespace {

const char *const kUsage = R"(usage: rootmerge-bench [--dir DIR] [--json FILE] [--repeat N] [--threads T] [K...]

Writes max(K) partial files (a 30000-bin TH1D, a 100x100 TH2D and 10 TParameter<double> each) and,
for each K (default: 16 64 256), times merging the first K of them with
  nway          dro::merge_files (reader threads: --threads, default 0 = auto)
  nway_1thread  dro::merge_files with one thread
  pairwise      the same objects merged two at a time (acc.Merge([next]) per file and key)
  tfilemerger   ROOT's TFileMerger (what hadd uses), in-place, histograms in one go
Each time is the best of N repetitions (default 3). --dir keeps the files there (default: a
temporary directory, removed afterwards). --json FILE writes the results.
)";

constexpr int kParameters = 10;

double seconds_since(std::chrono::steady_clock::time_point start)
{
   return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

double best_of(int repeat, const std::function<void()> &run)
{
   double best = 1e300;
   for (int r = 0; r < repeat; ++r) {
      const auto start = std::chrono::steady_clock::now();
      run();
      best = std::min(best, seconds_since(start));
   }
   return best;
}

// A dimuon-like spectrum: a falling continuum plus narrow resonances, so bins compress like real ones.
void write_partial(const std::string &path, unsigned seed)
{
   TRandom3 rng(seed);
   TFile file(path.c_str(), "RECREATE");
   TH1D h1("mass", "dimuon mass;m [GeV];events", 30000, 0.25, 300);
   TH2D h2("eta_phi", "eta vs phi", 100, -2.5, 2.5, 100, -3.2, 3.2);
   h1.SetDirectory(nullptr);
   h2.SetDirectory(nullptr);
   for (int i = 0; i < 20000; ++i) {
      const double u = rng.Rndm();
      h1.Fill(u < 0.1    ? rng.Gaus(3.097, 0.03)
              : u < 0.15 ? rng.Gaus(9.46, 0.08)
              : u < 0.3  ? rng.Gaus(91.19, 2.5)
                         : rng.Exp(15.0));
      h2.Fill(rng.Gaus(0, 1.2), rng.Uniform(-3.2, 3.2));
   }
   file.WriteTObject(&h1);
   file.WriteTObject(&h2);
   for (int p = 0; p < kParameters; ++p) {
      TParameter<double> par(("p" + std::to_string(p)).c_str(), rng.Uniform(0, 100));
      file.WriteTObject(&par);
   }
   if (file.TestBit(TFile::kWriteError))
      throw std::runtime_error("cannot write " + path);
}

std::vector<std::unique_ptr<TObject>> read_all(TFile &file)
{
   std::vector<std::unique_ptr<TObject>> objects;
   for (TObject *k : *file.GetListOfKeys()) {
      std::unique_ptr<TObject> obj(static_cast<TKey *>(k)->ReadObj());
      if (auto *h = dynamic_cast<TH1 *>(obj.get()))
         h->SetDirectory(nullptr);
      obj->ResetBit(kMustCleanup);
      objects.push_back(std::move(obj));
   }
   return objects;
}

// What a reduce over partial results does: one accumulator per key, merged with each next file.
void merge_pairwise(const std::string &out, const std::vector<std::string> &inputs)
{
   std::vector<std::unique_ptr<TObject>> acc;
   {
      TFile first(inputs[0].c_str());
      acc = read_all(first);
   }
   TList one;
   for (std::size_t i = 1; i < inputs.size(); ++i) {
      TFile file(inputs[i].c_str());
      auto objects = read_all(file);
      for (std::size_t j = 0; j < acc.size(); ++j) {
         one.Add(objects[j].get());
         acc[j]->IsA()->GetMerge()(acc[j].get(), &one, nullptr);
         one.Clear("nodelete");
      }
   }
   TFile file(out.c_str(), "RECREATE");
   for (auto &obj : acc)
      file.WriteTObject(obj.get());
}

void merge_tfilemerger(const std::string &out, const std::vector<std::string> &inputs)
{
   TFileMerger merger(/*isLocal=*/false, /*histoOneGo=*/true);
   merger.SetPrintLevel(0);
   merger.OutputFile(out.c_str(), "RECREATE");
   for (const auto &in : inputs)
      merger.AddFile(in.c_str(), false);
   if (!merger.Merge())
      throw std::runtime_error("TFileMerger failed");
}

// All three methods must agree, else the timings compare different work.
double checksum(const std::string &path)
{
   TFile file(path.c_str());
   auto *h1 = file.Get<TH1D>("mass");
   auto *h2 = file.Get<TH2D>("eta_phi");
   auto *p0 = file.Get<TParameter<double>>("p0");
   if (!h1 || !h2 || !p0)
      throw std::runtime_error("missing objects in " + path);
   return h1->GetEntries() + h2->GetSumOfWeights() + h1->GetBinContent(1000) + p0->GetVal();
}

struct Result {
   int k;
   double nway, nway_1thread, pairwise, tfilemerger;
};

} // namespace

int main(int argc, char **argv)
{
   std::string dir, json;
   int repeat = 3, threads = 0;
   std::vector<int> ks;
   for (int i = 1; i < argc; ++i) {
      const std::string arg = argv[i];
      auto next = [&]() -> std::string {
         if (i + 1 >= argc) {
            std::cerr << "rootmerge-bench: " << arg << " needs a value\n";
            std::exit(2);
         }
         return argv[++i];
      };
      if (arg == "-h" || arg == "--help") {
         std::cout << kUsage;
         return 0;
      } else if (arg == "--dir") {
         dir = next();
      } else if (arg == "--json") {
         json = next();
      } else if (arg == "--repeat") {
         repeat = std::max(1, std::atoi(next().c_str()));
      } else if (arg == "--threads") {
         threads = std::atoi(next().c_str());
      } else if (std::atoi(arg.c_str()) >= 1) {
         ks.push_back(std::atoi(arg.c_str()));
      } else {
         std::cerr << "rootmerge-bench: unknown argument " << arg << "\n" << kUsage;
         return 2;
      }
   }
   if (ks.empty())
      ks = {16, 64, 256};
   gErrorIgnoreLevel = kWarning;

   const bool temporary = dir.empty();
   if (temporary) {
      std::string tmpl = (fs::temp_directory_path() / "rootmerge-bench-XXXXXX").string();
      if (!mkdtemp(tmpl.data())) {
         std::perror("rootmerge-bench: mkdtemp");
         return 1;
      }
      dir = tmpl;
   }
   fs::create_directories(dir);

   const int kmax = *std::max_element(ks.begin(), ks.end());
   std::vector<std::string> files;
   const auto gen_start = std::chrono::steady_clock::now();
   for (int k = 0; k < kmax; ++k) {
      files.push_back((fs::path(dir) / ("part_" + std::to_string(k) + ".root")).string());
      if (!fs::exists(files.back()))
         write_partial(files.back(), 1000u + k);
   }
   std::printf("partials: %d in %s (%.1f s to prepare), ROOT %s\n", kmax, dir.c_str(), seconds_since(gen_start),
               dro::root_version().c_str());
   std::printf("%6s %10s %13s %10s %12s %14s %16s\n", "K", "nway[s]", "nway_1thr[s]", "pairwise[s]", "tfilemerger[s]",
               "pairwise/nway", "tfilemerger/nway");

   std::vector<Result> results;
   int status = 0;
   const std::string out = (fs::path(dir) / "merged.root").string();
   for (int k : ks) {
      const std::vector<std::string> inputs(files.begin(), files.begin() + k);
      dro::MergeOptions opts;
      opts.overwrite = true;
      opts.threads = threads;
      Result r{k, 0, 0, 0, 0};
      r.nway = best_of(repeat, [&] { dro::merge_files(out, inputs, opts); });
      const double expected = checksum(out);
      opts.threads = 1;
      r.nway_1thread = best_of(repeat, [&] { dro::merge_files(out, inputs, opts); });
      r.pairwise = best_of(repeat, [&] { merge_pairwise(out, inputs); });
      const double pairwise_sum = checksum(out);
      r.tfilemerger = best_of(repeat, [&] { merge_tfilemerger(out, inputs); });
      const double tfm_sum = checksum(out);
      if (std::abs(pairwise_sum - expected) > 1e-6 * std::abs(expected) ||
          std::abs(tfm_sum - expected) > 1e-6 * std::abs(expected)) {
         std::cerr << "rootmerge-bench: results differ at K=" << k << "\n";
         status = 1;
      }
      std::printf("%6d %10.3f %13.3f %10.3f %12.3f %14.2f %16.2f\n", k, r.nway, r.nway_1thread, r.pairwise,
                  r.tfilemerger, r.pairwise / r.nway, r.tfilemerger / r.nway);
      std::fflush(stdout);
      results.push_back(r);
   }
   fs::remove(out);

   if (!json.empty()) {
      std::ofstream js(json);
      js << "{\n  \"root_version\": \"" << dro::root_version() << "\",\n  \"threads\": " << threads
         << ",\n  \"repeat\": " << repeat << ",\n  \"results\": [\n";
      for (std::size_t i = 0; i < results.size(); ++i) {
         const Result &r = results[i];
         js << "    {\"k\": " << r.k << ", \"nway_s\": " << r.nway << ", \"nway_1thread_s\": " << r.nway_1thread
            << ", \"pairwise_s\": " << r.pairwise << ", \"tfilemerger_s\": " << r.tfilemerger
            << ", \"pairwise_over_nway\": " << r.pairwise / r.nway
            << ", \"tfilemerger_over_nway\": " << r.tfilemerger / r.nway << "}"
            << (i + 1 < results.size() ? ",\n" : "\n");
      }
      js << "  ]\n}\n";
      if (!js)
         std::cerr << "rootmerge-bench: cannot write " << json << "\n";
   }
   if (temporary)
      fs::remove_all(dir);
   return status;
}
