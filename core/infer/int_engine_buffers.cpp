// IntEngine::Impl::planBuffers: after build() made the ops, gives every activation a buffer (the
// image stage's bytes, the batch stage's rows, the image-stage activations the batch stage reads
// copied into rows at the end of each image) and packs the buffers into slots by liveness, so
// that a slot is reused once the last op reading its buffer has run.
#include "infer/int_engine_plan.h"

#include <algorithm>
#include <vector>

namespace quantscope {

void IntEngine::Impl::planBuffers()
{
    buffers.clear();
    crossing.clear();
    auto newBuffer = [&](bool batch, std::size_t bytes) {
        buffers.push_back(Buffer{batch, bytes, -1});
        return static_cast<int>(buffers.size() - 1);
    };
    const long nImage = static_cast<long>(firstBatchOp), nAll = static_cast<long>(ops.size());
    acts[0].imgBuffer = newBuffer(false, acts[0].numel());
    for (std::size_t j = 0; j < ops.size(); ++j) {
        ActInfo& a = acts[static_cast<std::size_t>(ops[j].out)];
        if (ops[j].batch) a.batchBuffer = newBuffer(true, roundUp4(a.numel() * (a.floats ? sizeof(float) : 1)));
        else a.imgBuffer = newBuffer(false, a.numel());
    }
    // Image-stage activations the batch stage reads are copied into rows at the end of each image.
    auto cross = [&](int act) {
        ActInfo& r = acts[static_cast<std::size_t>(acts[static_cast<std::size_t>(act)].root)];
        if (r.batchBuffer >= 0) return;
        r.batchBuffer = newBuffer(true, roundUp4(r.numel()));
        crossing.push_back(r.root);
    };
    for (std::size_t j = firstBatchOp; j < ops.size(); ++j)
        for (int in : ops[j].inputs()) cross(in);
    cross(outputAct);

    // Liveness: a buffer's slot is free again after the last op that reads it (its writer when
    // nothing does). Stage-start buffers (the input, the crossing rows) are written "at -1".
    std::vector<long> freeAt(buffers.size(), -1);
    auto use = [&](int buffer, long j) { freeAt[static_cast<std::size_t>(buffer)] = std::max(freeAt[static_cast<std::size_t>(buffer)], j); };
    auto rootOf = [&](int act) -> const ActInfo& { return acts[static_cast<std::size_t>(acts[static_cast<std::size_t>(act)].root)]; };
    for (long j = 0; j < nAll; ++j) {
        const Op& op = ops[static_cast<std::size_t>(j)];
        const ActInfo& o = acts[static_cast<std::size_t>(op.out)];
        use(op.batch ? o.batchBuffer : o.imgBuffer, op.batch ? j - nImage : j);
        for (int in : op.inputs()) {
            if (in < 0) continue;
            const ActInfo& r = rootOf(in);
            use(op.batch ? r.batchBuffer : r.imgBuffer, op.batch ? j - nImage : j);
        }
    }
    for (int a : crossing) use(acts[static_cast<std::size_t>(a)].imgBuffer, nImage);
    use(rootOf(outputAct).batchBuffer, nAll - nImage);

    auto allocate = [&](bool batch, std::vector<std::size_t>& sizes, std::vector<int> startBuffers, long nOps, std::size_t firstOp) {
        std::vector<int> freeSlots;
        std::vector<std::vector<int>> release(static_cast<std::size_t>(nOps + 2));
        auto take = [&](int b, long j) {
            Buffer& buf = buffers[static_cast<std::size_t>(b)];
            int slot;
            if (freeSlots.empty()) {
                slot = static_cast<int>(sizes.size());
                sizes.push_back(0);
            } else {
                slot = freeSlots.back();
                freeSlots.pop_back();
            }
            buf.slot = slot;
            sizes[static_cast<std::size_t>(slot)] = std::max(sizes[static_cast<std::size_t>(slot)], buf.bytes);
            release[static_cast<std::size_t>(std::max(freeAt[static_cast<std::size_t>(b)], j) + 1)].push_back(slot);
        };
        for (int b : startBuffers) take(b, -1);
        for (long j = 0; j <= nOps; ++j) {
            for (int s : release[static_cast<std::size_t>(j)]) freeSlots.push_back(s); // released after op j - 1
            if (j == nOps) break;
            const Op& op = ops[firstOp + static_cast<std::size_t>(j)];
            const ActInfo& o = acts[static_cast<std::size_t>(op.out)];
            take(batch ? o.batchBuffer : o.imgBuffer, j);
        }
    };
    slotBytes.clear();
    batchSlotBytes.clear();
    allocate(false, slotBytes, {acts[0].imgBuffer}, nImage, 0);
    std::vector<int> starts;
    for (int a : crossing) starts.push_back(acts[static_cast<std::size_t>(a)].batchBuffer);
    allocate(true, batchSlotBytes, starts, nAll - nImage, firstBatchOp);
    for (std::size_t& b : slotBytes) b += kSlack;
    for (std::size_t& b : batchSlotBytes) b = b * opt.chunk + kSlack;
}

} // namespace quantscope
