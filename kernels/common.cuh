// common.cuh: types, the host/device switch, and the thread-block abstraction.
//
// Every kernel of vxsim is written once, against the small `Block` interface
// below, and compiled two ways:
//
// * on the GPU (NVRTC through CuPy, or nvcc in the tests): a Block is a CUDA
//   thread block; `VX_BLOCKS(b)` binds it, reductions use warp shuffles and
//   shared memory, `sync()` is __syncthreads();
// * on the CPU (g++ with -DVX_HOST, vxsim/engines/cuda_host.py): a launch
//   runs its blocks one after the other, each by T host threads (T = 1 by
//   default, more to test the partition), `sync()` is a pthread barrier and
//   the reductions sum the threads' partial values in a fixed order. The same
//   kernel bodies then run on the CPU and are compared with the NumPy oracle;
//   only the warp-shuffle reduction and the GPU itself are left untested.
//
// No #include of system headers on the device side: NVRTC has none. The
// CUDA math functions (tanh, exp, log, sqrt, ldexp, ...) are built in there.
#pragma once

#ifndef VX_REAL
#define VX_REAL float
#endif

typedef VX_REAL real;
typedef unsigned int u32;
typedef unsigned long long u64;

// Most reduced values in one call of Block::reduce.
#define VX_MAX_RED 5

#ifdef VX_HOST
// ------------------------------------------------------------------ host build
#include <math.h>
#include <pthread.h>
#include <string.h>
#include <vector>

#define VX_FN inline
#define VX_KERNEL extern "C"

// One launch: `grid` blocks run one after the other, each by `threads` host
// threads (the caller starts them, each calling vx_host_thread(tid) and then
// the kernel function with the same arguments); barriers are real barriers.
struct VxHostLaunch {
    long long grid = 0;
    int threads = 1;
    std::vector<double> smem;
    std::vector<double> red;
    pthread_barrier_t barrier;
    bool has_barrier = false;
};
static VxHostLaunch vx_host;
static thread_local int vx_host_tid = 0;

// The host twin of <<<grid, threads, smem_bytes>>> for the next kernel call.
extern "C" void vx_host_launch(long long grid, long long smem_bytes, int threads)
{
    vx_host.grid = grid;
    vx_host.threads = threads;
    vx_host.smem.assign((size_t)(smem_bytes / 8 + 1), 0.0);
    vx_host.red.assign((size_t)threads * VX_MAX_RED, 0.0);
    if (vx_host.has_barrier)
        pthread_barrier_destroy(&vx_host.barrier);
    vx_host.has_barrier = threads > 1;
    if (vx_host.has_barrier)
        pthread_barrier_init(&vx_host.barrier, 0, (unsigned)threads);
}

// The calling host thread is thread `tid` of every block of the next launch.
extern "C" void vx_host_thread(int tid) { vx_host_tid = tid; }

// The device build's single-precision flush-to-zero (CuPy compiles with
// -ftz=true, after any option of ours): float results and float operands below
// FLT_MIN read as 0. On x86 the SSE control word's FTZ and DAZ bits do this for
// the calling thread (for doubles too, which the float32 program never brings
// near their own subnormal range). Set around a kernel call, restored after.
#if defined(__x86_64__) || defined(__SSE2__)
#include <xmmintrin.h>
extern "C" int vx_host_ftz_supported() { return 1; }
extern "C" unsigned vx_host_ftz_begin()
{
    const unsigned old = _mm_getcsr();
    _mm_setcsr(old | 0x8000u | 0x0040u);  // FTZ (bit 15), DAZ (bit 6)
    return old;
}
extern "C" void vx_host_ftz_end(unsigned old) { _mm_setcsr(old); }
#else
extern "C" int vx_host_ftz_supported() { return 0; }
extern "C" unsigned vx_host_ftz_begin() { return 0u; }
extern "C" void vx_host_ftz_end(unsigned old) { (void)old; }
#endif

struct Block {
    long long b;
    explicit Block(long long index) : b(index) {}
    int tid() const { return vx_host_tid; }
    int size() const { return vx_host.threads; }
    long long index() const { return b; }
    long long grid() const { return vx_host.grid; }
    void sync() const
    {
        if (vx_host.has_barrier)
            pthread_barrier_wait(&vx_host.barrier);
    }
    // The same contract as on the device: every thread gets the block's totals.
    template <int NV>
    void reduce(double (&v)[NV]) const
    {
        if (vx_host.threads == 1)
            return;
        for (int k = 0; k < NV; ++k)
            vx_host.red[(size_t)tid() * VX_MAX_RED + k] = v[k];
        sync();
        for (int k = 0; k < NV; ++k) {
            double total = 0.0;
            for (int t = 0; t < vx_host.threads; ++t)
                total += vx_host.red[(size_t)t * VX_MAX_RED + k];
            v[k] = total;
        }
        sync();
    }
    template <class T>
    T *shared() const { return reinterpret_cast<T *>(vx_host.smem.data()); }
};

// Blocks one after the other (a barrier between two, as they share the host's
// "shared memory").
#define VX_BLOCKS(b) for (Block b(0); b.index() < vx_host.grid; b.sync(), b = Block(b.index() + 1))

VX_FN int vx_bit_length32(u32 k) { return k ? 32 - __builtin_clz(k) : 0; }

VX_FN double vx_nan()
{
    const u64 bits = 0x7FF8000000000000ULL;
    double x;
    memcpy(&x, &bits, sizeof x);
    return x;
}

VX_FN float vx_fma(float a, float b, float c) { return fmaf(a, b, c); }
VX_FN double vx_fma(double a, double b, double c) { return fma(a, b, c); }

#else
// ------------------------------------------------------------------ device build
#ifndef VX_MAX_THREADS
#error "VX_MAX_THREADS (the launch bound) comes from cuda_sources.precision_prefix"
#endif
#define VX_FN __device__ __forceinline__
// Every kernel is launched with at most VX_MAX_THREADS threads per block, and
// says so: the compiler then keeps its registers within what such a block may
// use, so a launch of up to that many threads cannot fail for lack of them.
#define VX_KERNEL extern "C" __global__ __launch_bounds__(VX_MAX_THREADS)

extern __shared__ double vx_dyn_smem[];

struct Block {
    __device__ int tid() const { return (int)threadIdx.x; }
    __device__ int size() const { return (int)blockDim.x; }
    __device__ long long index() const { return (long long)blockIdx.x; }
    __device__ long long grid() const { return (long long)gridDim.x; }
    __device__ void sync() const { __syncthreads(); }

    // Sum each of v[0..NV) over the block's threads; every thread gets the totals.
    // blockDim.x must be a multiple of 32 (the host code launches it so). The
    // order of summation is fixed by blockDim: results are deterministic.
    template <int NV>
    __device__ void reduce(double (&v)[NV]) const
    {
        __shared__ double scratch[32 * VX_MAX_RED + VX_MAX_RED];
        const int lane = threadIdx.x & 31;
        const int warp = threadIdx.x >> 5;
        const int nwarps = (blockDim.x + 31) >> 5;
#pragma unroll
        for (int k = 0; k < NV; ++k) {
            double x = v[k];
            for (int off = 16; off > 0; off >>= 1)
                x += __shfl_down_sync(0xFFFFFFFFu, x, off);
            if (lane == 0)
                scratch[warp * VX_MAX_RED + k] = x;
        }
        __syncthreads();
        if (warp == 0) {
#pragma unroll
            for (int k = 0; k < NV; ++k) {
                double x = lane < nwarps ? scratch[lane * VX_MAX_RED + k] : 0.0;
                for (int off = 16; off > 0; off >>= 1)
                    x += __shfl_down_sync(0xFFFFFFFFu, x, off);
                if (lane == 0)
                    scratch[32 * VX_MAX_RED + k] = x;
            }
        }
        __syncthreads();
#pragma unroll
        for (int k = 0; k < NV; ++k)
            v[k] = scratch[32 * VX_MAX_RED + k];
        __syncthreads();
    }

    template <class T>
    __device__ T *shared() const { return reinterpret_cast<T *>(vx_dyn_smem); }
};

#define VX_BLOCKS(b) \
    Block b;         \
    if (true)

VX_FN int vx_bit_length32(u32 k) { return 32 - __clz((int)k); }

VX_FN double vx_nan() { return __longlong_as_double(0x7FF8000000000000LL); }

VX_FN float vx_fma(float a, float b, float c) { return __fmaf_rn(a, b, c); }
VX_FN double vx_fma(double a, double b, double c) { return __fma_rn(a, b, c); }
#endif

// ------------------------------------------------------------------ both builds

// The elements i of a length-n vector that this thread of the block handles.
#define VX_FOR(i, blk, n) for (int i = (blk).tid(); i < (n); i += (blk).size())

// Grid-stride loop over [0, total): every element once, for any launch shape.
#define VX_GRID_FOR(k, blk, total)                                                   \
    for (long long k = (blk).index() * (blk).size() + (blk).tid(); k < (total);     \
         k += (blk).grid() * (blk).size())

// Finite (neither NaN nor +-inf), without library calls.
VX_FN bool vx_isfinite(double x) { return x - x == 0.0; }
