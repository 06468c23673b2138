// tandem._tandem: the public C++ API (tandem/tandem.h) for Python. The GIL is released while
// tandem trains and taken again only to call back into Python (a step callback, the data
// source); a Python exception raised there stops the run at its step boundary and is re-raised,
// as it was, from run().
#include <pybind11/functional.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <Python.h>

#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <tandem/tandem.h>

namespace py = pybind11;

namespace {

// A Python object that tandem may copy and drop on its own threads without the GIL: the last
// owner takes the GIL to let it go.
struct HeldObject {
  py::object object;
  explicit HeldObject(py::object o) : object(std::move(o)) {}
  ~HeldObject() {
    py::gil_scoped_acquire gil;
    object = py::object();
  }
};

// The first Python exception raised inside a run (callback or data source), kept to be re-raised
// from run() once tandem has stopped cleanly.
struct PythonFailure {
  std::mutex mutex;
  std::optional<py::error_already_set> error;
  // Called with the GIL held.
  void keep(py::error_already_set& e) {
    std::lock_guard lock(mutex);
    if (!error) error = std::move(e);
  }
  bool any() {
    std::lock_guard lock(mutex);
    return error.has_value();
  }
  // Called with the GIL held, inside the catch of `e`.
  [[noreturn]] void keep_and_stop(py::error_already_set& e, const char* where) {
    const std::string text = std::string(where) + " raised " + e.what();
    keep(e);
    throw tandem::Error(text);
  }
  // A signal Python noted while tandem trained (Ctrl-C: KeyboardInterrupt) runs its handler
  // here, with the GIL held; what the handler raises is kept, and the run stops at its next
  // boundary. True when a failure is kept.
  bool take_signals() {
    if (PyErr_CheckSignals() != 0) {
      py::error_already_set e;
      keep(e);
    }
    return any();
  }
  void reraise_if_any() {
    std::lock_guard lock(mutex);
    if (error) {
      py::error_already_set e = std::move(*error);
      error.reset();
      throw e;
    }
  }
  ~PythonFailure() {
    if (error) {
      py::gil_scoped_acquire gil;
      error.reset();
    }
  }
};

const char* split_name(tandem::Split split) {
  return split == tandem::Split::kTrain ? "train" : "held_out";
}

// data(split, step, sequence) -> a 1-D integer array of seq_len + 1 tokens.
class PythonDataSource final : public tandem::DataSource {
 public:
  PythonDataSource(std::shared_ptr<HeldObject> callable, std::shared_ptr<PythonFailure> failure)
      : callable_(std::move(callable)), failure_(std::move(failure)) {}

  void sequence(tandem::Split split, int64_t step, int64_t sequence,
                std::span<int32_t> tokens) const override {
    py::gil_scoped_acquire gil;
    // A Ctrl-C comes here first when a Python data source runs: kept for the clean stop at the
    // next boundary, and this step is still given its tokens.
    failure_->take_signals();
    try {
      py::object result = callable_->object(split_name(split), step, sequence);
      py::array array = py::array::ensure(result);
      if (!array) {
        PyErr_Format(PyExc_TypeError,
                     "data(%s, %lld, %lld) returned %s; return a numpy array of integers",
                     split_name(split), static_cast<long long>(step),
                     static_cast<long long>(sequence), Py_TYPE(result.ptr())->tp_name);
        throw py::error_already_set();
      }
      const char kind = array.dtype().kind();
      if (array.ndim() != 1 || static_cast<size_t>(array.size()) != tokens.size() ||
          (kind != 'i' && kind != 'u')) {
        const std::string got = py::str(array.attr("shape")).cast<std::string>() + " " +
                                py::str(array.dtype()).cast<std::string>();
        PyErr_Format(PyExc_ValueError,
                     "data(%s, %lld, %lld) returned an array of shape and dtype %s; return a 1-D "
                     "integer array of model.seq_len + 1 = %zu tokens",
                     split_name(split), static_cast<long long>(step),
                     static_cast<long long>(sequence), got.c_str(), tokens.size());
        throw py::error_already_set();
      }
      // Any integer dtype: through int64, refusing what int32 cannot hold (uint64 above 2^63
      // wraps negative and is refused below with the rest).
      auto values = py::array_t<int64_t, py::array::c_style | py::array::forcecast>::ensure(array);
      if (!values) throw py::error_already_set();
      const int64_t* v = values.data();
      for (size_t i = 0; i < tokens.size(); ++i) {
        if (v[i] < 0 || v[i] > INT32_MAX) {
          PyErr_Format(PyExc_ValueError,
                       "data(%s, %lld, %lld): token %zu is %lld; tokens are in [0, "
                       "model.vocab_size)",
                       split_name(split), static_cast<long long>(step),
                       static_cast<long long>(sequence), i, static_cast<long long>(v[i]));
          throw py::error_already_set();
        }
        tokens[i] = static_cast<int32_t>(v[i]);
      }
    } catch (py::error_already_set& e) {
      failure_->keep_and_stop(e, "the data source");
    }
  }

 private:
  std::shared_ptr<HeldObject> callable_;
  std::shared_ptr<PythonFailure> failure_;
};

py::dict result_dict(const tandem::ControlResult& r) {
  py::dict d;
  d["ok"] = r.ok;
  d["message"] = r.message;
  d["step"] = r.step;
  d["path"] = r.path;
  d["previous_learning_rate"] = r.previous_learning_rate;
  return d;
}

py::dict step_dict(const tandem::StepInfo& s) {
  py::dict d;
  d["step"] = s.step;
  d["loss"] = s.loss;
  d["learning_rate"] = s.learning_rate;
  d["grad_norm"] = s.grad_norm;
  d["tokens"] = s.tokens;
  d["seconds"] = s.seconds;
  d["compute_seconds"] = s.compute_seconds;
  d["all_to_all_wait_seconds"] = s.all_to_all_wait_seconds;
  d["pipeline_wait_seconds"] = s.pipeline_wait_seconds;
  d["sync_wait_seconds"] = s.sync_wait_seconds;
  d["checkpoint"] = s.checkpoint;
  return d;
}

py::dict summary_dict(const tandem::RunSummary& s) {
  py::dict d;
  d["steps"] = s.steps;
  d["first_step"] = s.first_step;
  d["stopped"] = s.stopped;
  d["stopped_by_request"] = s.stopped_by_request;
  d["nothing_to_train"] = s.nothing_to_train;
  d["losses"] = s.losses;
  py::list eval;
  for (const auto& [step, loss] : s.eval_losses) eval.append(py::make_tuple(step, loss));
  d["eval_losses"] = eval;
  d["tokens_per_second"] = s.tokens_per_second;
  d["params"] = s.params;
  d["flops_per_token"] = s.flops_per_token;
  d["json"] = s.json;
  return d;
}

// A run and what its Python side needs: the failure it re-raises.
class PythonRun {
 public:
  PythonRun(const tandem::RunConfig& config, tandem::RunOptions options)
      : run_(std::make_unique<tandem::Run>(config, std::move(options))),
        failure_(std::make_shared<PythonFailure>()) {}

  void set_data(py::object callable) {
    run_->set_data_source(std::make_shared<PythonDataSource>(hold(std::move(callable)), failure_));
  }

  py::dict run(py::object on_step, py::object on_evaluation) {
    if (run_->started()) throw tandem::Error("Trainer.run() runs once; make another Trainer");
    for (const auto& [name, f] :
         {std::pair{"on_step", &on_step}, {"on_evaluation", &on_evaluation}})
      if (!f->is_none() && !PyCallable_Check(f->ptr()))
        throw py::type_error(std::string(name) + " is a callable taking a dict, not " +
                             Py_TYPE(f->ptr())->tp_name);
    auto failure = failure_;
    if (!on_step.is_none()) {
      auto callback = hold(on_step);
      run_->on_step([callback, failure](const tandem::StepInfo& s) {
        py::gil_scoped_acquire gil;
        try {
          callback->object(step_dict(s));
        } catch (py::error_already_set& e) {
          failure->keep_and_stop(e, "the step callback");
        }
      });
    }
    if (!on_evaluation.is_none()) {
      auto callback = hold(on_evaluation);
      run_->on_evaluation([callback, failure](const tandem::EvaluationInfo& e) {
        py::gil_scoped_acquire gil;
        try {
          py::dict d;
          d["step"] = e.step;
          d["loss"] = e.loss;
          d["seconds"] = e.seconds;
          callback->object(d);
        } catch (py::error_already_set& error) {
          failure->keep_and_stop(error, "the evaluation callback");
        }
      });
    }
    // Signals (Ctrl-C, or a SIGTERM handler that raises) are taken at every boundary and while
    // paused.
    run_->stop_when([failure] {
      py::gil_scoped_acquire gil;
      return failure->take_signals();
    });
    std::optional<tandem::RunSummary> summary;
    try {
      py::gil_scoped_release released;
      summary = run_->run();
    } catch (const tandem::Error&) {
      let_go();
      failure_->reraise_if_any();  // the Python exception that stopped it, as raised
      throw;
    }
    let_go();
    failure_->reraise_if_any();
    return summary_dict(*summary);
  }

  tandem::Run& job() { return *run_; }

  ~PythonRun() {
    // The run's callbacks and data source drop their Python objects (HeldObject takes the GIL).
    py::gil_scoped_release released;
    run_.reset();
  }

 private:
  // The Python objects the run holds, let go of when it ends: a callback that refers to its own
  // Trainer would otherwise keep both alive (pybind11's objects are not garbage-collected).
  std::shared_ptr<HeldObject> hold(py::object o) {
    held_.push_back(std::make_shared<HeldObject>(std::move(o)));
    return held_.back();
  }
  void let_go() {
    for (auto& h : held_) h->object = py::none();
  }

  std::unique_ptr<tandem::Run> run_;
  std::shared_ptr<PythonFailure> failure_;
  std::vector<std::shared_ptr<HeldObject>> held_;
};

py::dict load_parameters(const std::string& path) {
  std::map<std::string, tandem::ParameterValues> parameters;
  {
    py::gil_scoped_release released;
    parameters = tandem::load_parameters(path);
  }
  py::dict out;
  for (auto& [name, p] : parameters) {
    py::array_t<float> array(p.shape);
    std::memcpy(array.mutable_data(), p.values.data(), p.values.size() * sizeof(float));
    out[py::str(name)] = array;
  }
  return out;
}

}  // namespace

PYBIND11_MODULE(_tandem, m) {
  m.doc() = "tandem's public C++ API (tandem/tandem.h); use the tandem package above it";
  auto error = py::register_exception<tandem::Error>(m, "Error", PyExc_RuntimeError);
  py::register_exception<tandem::UsageError>(m, "UsageError", error.ptr());
  m.def("version", &tandem::version);
  m.def("build_commit", &tandem::build_commit);

  py::class_<tandem::RunConfig>(m, "RunConfig")
      .def(py::init<>())
      .def_static("from_file", &tandem::RunConfig::from_file, py::arg("path"))
      .def_static("from_toml", &tandem::RunConfig::from_toml, py::arg("text"),
                  py::arg("source_name") = "")
      .def(
          "set",
          [](tandem::RunConfig& c, const std::string& key, const std::string& value) {
            c.set(key, value);
          },
          py::arg("key"), py::arg("value"))
      .def("get", &tandem::RunConfig::get, py::arg("key"))
      .def("validate", &tandem::RunConfig::validate)
      .def("to_toml", &tandem::RunConfig::to_toml);

  // No blocking wait with the GIL released: the Python side polls (interruptible by Ctrl-C,
  // and a daemon thread waiting at interpreter exit is not ended inside a C++ frame).
  py::class_<tandem::ControlReply>(m, "ControlReply")
      .def("ready", &tandem::ControlReply::ready)
      .def("poll", [](const tandem::ControlReply& r) -> py::object {
        const std::optional<tandem::ControlResult> result =
            r.wait_for(std::chrono::milliseconds(0));
        if (!result) return py::none();
        return result_dict(*result);
      });

  py::class_<PythonRun>(m, "Run")
      .def(py::init([](const tandem::RunConfig& config, std::string resume, std::string summary,
                       std::string log_jsonl, std::string trace, std::string label) {
             tandem::RunOptions o;
             o.resume = std::move(resume);
             o.summary_json_path = std::move(summary);
             o.log_jsonl_path = std::move(log_jsonl);
             o.trace_path = std::move(trace);
             o.label = std::move(label);
             return std::make_unique<PythonRun>(config, std::move(o));
           }),
           py::arg("config"), py::arg("resume") = "", py::arg("summary_json") = "",
           py::arg("log_jsonl") = "", py::arg("trace") = "", py::arg("label") = "python")
      .def("set_data", &PythonRun::set_data)
      .def("run", &PythonRun::run, py::arg("on_step") = py::none(),
           py::arg("on_evaluation") = py::none())
      .def("pause", [](PythonRun& r) { return r.job().pause(); })
      .def("resume", [](PythonRun& r) { return r.job().resume(); })
      .def("checkpoint", [](PythonRun& r) { return r.job().checkpoint(); })
      .def("set_learning_rate",
           [](PythonRun& r, double lr) { return r.job().set_learning_rate(lr); })
      .def("stop", [](PythonRun& r) { return r.job().stop(); })
      .def_property_readonly("rank", [](PythonRun& r) { return r.job().rank(); })
      .def_property_readonly("world_size", [](PythonRun& r) { return r.job().world_size(); });

  m.def("load_parameters", &load_parameters, py::arg("path"));
}
