// Python module distrdf_oscar._core: the native n-way merge, and the event loops' phases.
#include "distrdf_oscar/event_loops.hpp"
#include "distrdf_oscar/merge.hpp"

#include <pybind11/functional.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <pybind11/stl/filesystem.h>

#include <TDirectory.h>
#include <TFile.h>
#include <TObjString.h>
#include <TROOT.h>

#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>

namespace py = pybind11;

namespace {

std::vector<std::string> to_strings(const std::vector<std::filesystem::path> &paths)
{
   std::vector<std::string> out;
   out.reserve(paths.size());
   for (const auto &p : paths)
      out.push_back(p.string());
   return out;
}

py::dict merge_files(const std::filesystem::path &output, const std::vector<std::filesystem::path> &inputs,
                     std::vector<std::string> exclude, bool overwrite, int compression, int threads,
                     std::optional<std::function<void(const std::string &)>> log)
{
   dro::MergeOptions opts;
   opts.exclude = std::move(exclude);
   opts.overwrite = overwrite;
   opts.compression = compression;
   opts.threads = threads;
   if (log)
      // pybind11's wrapper takes the GIL around each call into Python.
      opts.log = std::move(*log);
   const std::vector<std::string> urls = to_strings(inputs);

   dro::MergeSummary s;
   {
      py::gil_scoped_release nogil;
      s = dro::merge_files(output.string(), urls, opts);
   }
   py::dict d;
   d["inputs"] = s.inputs;
   d["objects"] = s.objects;
   d["trees"] = s.trees;
   d["directories"] = s.directories;
   d["excluded"] = s.excluded;
   d["tree_entries"] = s.tree_entries;
   d["output_bytes"] = s.output_bytes;
   d["seconds"] = s.seconds;
   return d;
}

// Text records (TObjString) in a file: a partial's metadata, read and written without PyROOT, so
// that a reducer of native partials never pays PyROOT's start-up.
std::optional<std::string> read_text(const std::string &path, const std::string &key)
{
   std::unique_ptr<TFile> f(TFile::Open(path.c_str(), "READ"));
   if (!f || f->IsZombie())
      throw std::runtime_error(path + ": not a readable ROOT file");
   auto *text = f->Get<TObjString>(key.c_str());
   if (!text)
      return std::nullopt;
   std::string out = text->GetString().Data();
   delete text;
   return out;
}

void write_texts(const std::string &path, const std::string &directory, const std::map<std::string, std::string> &texts,
                 bool update, const std::string &title, int compression)
{
   std::unique_ptr<TFile> f(TFile::Open(path.c_str(), update ? "UPDATE" : "RECREATE", title.c_str(), compression));
   if (!f || f->IsZombie())
      throw std::runtime_error(path + ": cannot open for writing");
   TDirectory *dir = f->GetDirectory(directory.c_str());
   if (!dir)
      dir = f->mkdir(directory.c_str());
   if (!dir)
      throw std::runtime_error(path + ": cannot make directory " + directory);
   for (const auto &[key, value] : texts) {
      TObjString text(value.c_str());
      if (dir->WriteObject(&text, key.c_str()) <= 0)
         throw std::runtime_error(path + ": cannot write " + directory + "/" + key);
   }
   if (f->Write() < 0 || f->TestBit(TFile::kWriteError))
      throw std::runtime_error(path + ": write error");
   f->Close();
}

} // namespace

PYBIND11_MODULE(_core, m)
{
   m.doc() = "Native n-way merge of ROOT files (distrdf-oscar's C++ core).";

   // PyROOT shares this process and merges may run from several Python threads.
   ROOT::EnableThreadSafety();

   PYBIND11_CONSTINIT static py::gil_safe_call_once_and_store<py::object> merge_error;
   merge_error.call_once_and_store_result(
       [&] { return py::object(py::exception<dro::MergeError>(m, "MergeError", PyExc_RuntimeError)); });
   py::register_exception_translator([](std::exception_ptr p) {
      try {
         if (p)
            std::rethrow_exception(p);
      } catch (const dro::MergeError &e) {
         const py::object &type = merge_error.get_stored();
         py::object err = type(e.what());
         err.attr("kind") = dro::to_string(e.kind());
         PyErr_SetObject(type.ptr(), err.ptr());
      }
   });

   m.def("merge_files", &merge_files, py::arg("output"), py::arg("inputs"), py::kw_only(),
         py::arg_v("exclude", std::vector<std::string>{}, "()"), py::arg("overwrite") = false,
         py::arg("compression") = -1, py::arg("threads") = 0, py::arg("log") = py::none(),
         R"doc(Merge ROOT files n-way into a new file ``output`` and return a summary dict.

Every key (highest cycle) must exist in every input with the same class; each key is merged with one
call of its class's merge function, trees are concatenated, directories recurse. Top-level keys named
in ``exclude`` are skipped. Raises MergeError (``kind``: "input", "mismatch", "output" or "write");
the partial output is removed. The GIL is released while merging.)doc");
   m.def("root_version", &dro::root_version, "ROOT version the core runs with, e.g. '6.40.00'.");
   m.def("read_text", &read_text, py::arg("path"), py::arg("key"),
         "The TObjString at ``key`` (e.g. 'dir/name') of a ROOT file, None if absent; RuntimeError if the file "
         "cannot be read.");
   m.def("write_texts", &write_texts, py::arg("path"), py::arg("directory"), py::arg("texts"), py::kw_only(),
         py::arg("update"), py::arg("title") = "", py::arg("compression") = -1,
         "Write each (key, text) of ``texts`` as a TObjString in ``directory`` of a ROOT file (made if missing), "
         "updating the file or creating it anew.");
   m.def("watch_event_loops", &dro::watch_event_loops, py::arg("shown"),
         "Record, from ROOT's log, when RDataFrame's event loops start, finish their JIT and end (once per "
         "process; later calls do nothing). RDataFrame messages above level ``shown`` are not passed on.");
   m.def("take_event_loop_marks", &dro::take_event_loop_marks,
         "The (phase, epoch seconds) marks recorded since the last call, oldest first; phase is 'loop_started', "
         "'jitted' or 'loop_ended'.");
}
