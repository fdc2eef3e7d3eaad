// A caching CPU allocator for the compiled training step (trainer/compile/allocator.py).
//
// On the GPU, PyTorch's caching allocator hands a training step the same blocks every step. On the
// CPU every intermediate of the step is malloc'd and freed again: blocks of a few hundred KiB and
// more are mmap'd by glibc and returned to the kernel on free, so each step page-faults its whole
// working set in again (measured ~1,300-1,900 minor faults per step on the small GPT benchmark,
// ~1-2 ms of a ~31 ms step), and the memory comes in 4 KiB pages (TLB misses on every stream over
// multi-MiB activations).
//
// While a compiled step runs (a thread-local flag, set around the graph call), blocks of at least
// `min_bytes` come from free lists keyed by exact (rounded) size; a freed block goes back to its
// list, whenever and on whichever thread it is freed. The step asks for the same sizes every step,
// so after the first step nothing is mapped or faulted in. Blocks of 2 MiB and more are 2 MiB
// aligned and madvise(MADV_HUGEPAGE)'d (used where transparent huge pages are "madvise" or
// "always"). Everything else -- other threads, code outside the step, small blocks -- goes to the
// allocator that was installed before (torch's default), unchanged.
//
// Installed once, on first use (c10::SetCPUAllocator). Cached bytes are capped (`limit_bytes`;
// a block freed beyond the cap is unmapped) and released by empty_cache() (the engine calls it
// when a fit ends).
#include <Python.h>

#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/util/Exception.h>

#include <pthread.h>
#include <sys/mman.h>

#include <cstdint>
#include <cstring>
#include <mutex>
#include <new>
#include <unordered_map>
#include <vector>

namespace trainer {
namespace step_alloc {
namespace {

constexpr size_t kHuge = size_t(2) << 20;
constexpr size_t kPage = 4096;

struct Block {
  void* base;       // what mmap returned
  size_t map_size;  // what was mapped
  size_t size;      // usable bytes (the free-list key)
  void* data;       // base, or base rounded up to 2 MiB for huge blocks
};

struct State {
  std::mutex mu;
  std::unordered_map<void*, Block*> live;                   // data pointer -> block, handed out
  std::unordered_map<size_t, std::vector<Block*>> free_;     // size -> cached blocks
  size_t cached_bytes = 0;
  size_t live_bytes = 0;
  int64_t mapped = 0;  // blocks mapped so far (a steady step maps none)
  int64_t hits = 0;
  size_t min_bytes = 64 * 1024;
  size_t limit_bytes = size_t(1) << 30;
  size_t huge_min = kHuge;  // blocks of at least this many bytes are rounded up to whole huge pages
  bool huge = true;
};

State* g_state = nullptr;
c10::Allocator* g_prev = nullptr;
thread_local bool g_active = false;

State& state() { return *g_state; }

size_t rounded(size_t n, size_t huge_min) {
  const size_t align = n >= huge_min ? kHuge : kPage;
  return (n + align - 1) / align * align;
}

Block* map_block(size_t size, bool huge) {
  const bool big = size >= kHuge;
  const size_t map_size = size + (big ? kHuge : 0);
  void* base = mmap(nullptr, map_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (base == MAP_FAILED) return nullptr;
  void* data = base;
  if (big) {
    data = reinterpret_cast<void*>((reinterpret_cast<uintptr_t>(base) + kHuge - 1) & ~(uintptr_t(kHuge) - 1));
    if (huge) madvise(data, size, MADV_HUGEPAGE);
  }
  return new Block{base, map_size, size, data};
}

void unmap_block(Block* b) {
  munmap(b->base, b->map_size);
  delete b;
}

// The deleter of every block handed out, and the allocator's raw deleter: a pointer that is not
// one of ours came from the previous allocator (raw_allocate while the step was not active).
void release(void* ptr) {
  if (ptr == nullptr) return;
  Block* drop = nullptr;
  bool ours = false;
  {
    State& s = state();
    std::lock_guard<std::mutex> guard(s.mu);
    auto it = s.live.find(ptr);
    if (it != s.live.end()) {
      ours = true;
      Block* b = it->second;
      s.live.erase(it);
      s.live_bytes -= b->size;
      if (s.cached_bytes + b->size > s.limit_bytes) {
        drop = b;
      } else {
        s.free_[b->size].push_back(b);
        s.cached_bytes += b->size;
      }
    }
  }
  if (!ours) {
    g_prev->raw_deleter()(ptr);
  } else if (drop != nullptr) {
    unmap_block(drop);
  }
}

struct StepAllocator final : c10::Allocator {
  c10::DataPtr allocate(size_t n) override {
    if (!g_active || n < state().min_bytes) return g_prev->allocate(n);
    State& s = state();
    const size_t size = rounded(n, s.huge_min);
    Block* b = nullptr;
    bool huge;
    {
      std::lock_guard<std::mutex> guard(s.mu);
      huge = s.huge;
      auto it = s.free_.find(size);
      if (it != s.free_.end() && !it->second.empty()) {
        b = it->second.back();
        it->second.pop_back();
        s.cached_bytes -= size;
        ++s.hits;
      }
    }
    const bool fresh = b == nullptr;
    if (fresh) {
      b = map_block(size, huge);
      if (b == nullptr) return g_prev->allocate(n);  // out of address space: torch's allocator reports it
    }
    {
      std::lock_guard<std::mutex> guard(s.mu);
      if (fresh) ++s.mapped;
      s.live.emplace(b->data, b);
      s.live_bytes += b->size;
    }
    return {b->data, b->data, &release, c10::Device(c10::DeviceType::CPU)};
  }

  c10::DeleterFnPtr raw_deleter() const override { return &release; }

  void copy_data(void* dest, const void* src, std::size_t count) const override { std::memcpy(dest, src, count); }
};

StepAllocator* g_allocator = nullptr;

void after_fork_in_child() {
  // another thread may have held the lock when the process forked (DataLoader workers): the child
  // has only this thread, so a fresh mutex is correct
  if (g_state != nullptr) new (&g_state->mu) std::mutex();
}

}  // namespace

void install() {
  if (g_allocator != nullptr) return;
  g_state = new State();
  g_prev = c10::GetCPUAllocator();
  g_allocator = new StepAllocator();
  pthread_atfork(nullptr, nullptr, &after_fork_in_child);
  c10::SetCPUAllocator(g_allocator, /*priority=*/150);
}

void empty_cache() {
  if (g_state == nullptr) return;
  std::vector<Block*> drop;
  {
    State& s = state();
    std::lock_guard<std::mutex> guard(s.mu);
    for (auto& kv : s.free_) drop.insert(drop.end(), kv.second.begin(), kv.second.end());
    s.free_.clear();
    s.cached_bytes = 0;
  }
  for (Block* b : drop) unmap_block(b);
}

// ---- Python functions of trainer._C (plain C API: the per-step flag costs ~0.1 us, not an op dispatch)

PyObject* py_install(PyObject*, PyObject* args) {
  unsigned long long min_bytes, limit_bytes, huge_min;
  int huge;
  if (!PyArg_ParseTuple(args, "KKpK", &min_bytes, &limit_bytes, &huge, &huge_min)) return nullptr;
  install();
  State& s = state();
  std::lock_guard<std::mutex> guard(s.mu);
  s.min_bytes = static_cast<size_t>(min_bytes);
  s.limit_bytes = static_cast<size_t>(limit_bytes);
  s.huge = huge != 0;
  s.huge_min = static_cast<size_t>(huge_min);
  Py_RETURN_NONE;
}

PyObject* py_set_active(PyObject*, PyObject* arg) {
  const int on = PyObject_IsTrue(arg);
  if (on < 0) return nullptr;
  const bool before = g_active;
  g_active = on != 0 && g_allocator != nullptr;
  return PyBool_FromLong(before);
}

PyObject* py_stats(PyObject*, PyObject*) {
  if (g_state == nullptr) return Py_BuildValue("{s:O}", "installed", Py_False);
  State& s = state();
  std::lock_guard<std::mutex> guard(s.mu);
  return Py_BuildValue("{s:O,s:K,s:K,s:L,s:L,s:K,s:K}", "installed", Py_True,
                       "cached_bytes", (unsigned long long)s.cached_bytes,
                       "live_bytes", (unsigned long long)s.live_bytes, "mapped", (long long)s.mapped,
                       "hits", (long long)s.hits, "min_bytes", (unsigned long long)s.min_bytes,
                       "limit_bytes", (unsigned long long)s.limit_bytes);
}

PyObject* py_empty_cache(PyObject*, PyObject*) {
  Py_BEGIN_ALLOW_THREADS
  empty_cache();
  Py_END_ALLOW_THREADS
  Py_RETURN_NONE;
}

}  // namespace step_alloc
}  // namespace trainer

PyMethodDef trainer_step_alloc_methods[] = {
    {"step_alloc_install", trainer::step_alloc::py_install, METH_VARARGS,
     "step_alloc_install(min_bytes, limit_bytes, huge, huge_min_bytes): install the step allocator (once) and set its options"},
    {"step_alloc_set_active", trainer::step_alloc::py_set_active, METH_O,
     "step_alloc_set_active(on) -> bool: route this thread's large CPU allocations to the cache; returns the old flag"},
    {"step_alloc_stats", trainer::step_alloc::py_stats, METH_NOARGS, "step_alloc_stats() -> dict"},
    {"step_alloc_empty_cache", trainer::step_alloc::py_empty_cache, METH_NOARGS,
     "step_alloc_empty_cache(): unmap every cached (free) block"},
    {nullptr, nullptr, 0, nullptr}};
