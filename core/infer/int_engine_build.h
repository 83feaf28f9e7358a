// IntEngine::Impl::build's plan builder (internal to core/infer): Impl::Builder walks an integer
// ExportedModel's stored layers and adds each one's ops to the plan of int_engine_plan.h. Shared by
// int_engine_build.cpp (the walk, quantization points, rescales, views and the model's head),
// int_engine_build_weights.cpp (convolutions and dense layers: weights in the kernels' order,
// accumulator bias and requantization multipliers) and int_engine_build_ops.cpp (the layers
// without weights: pools, Add, Mul, Concat, activations, channel movements).
#pragma once

#include "infer/int_engine_plan.h"

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace quantscope {

class IntEngine::Impl::Builder {
public:
    // Builds into e (its acts set up for the input, activation 0); the batch stage starts at stored
    // layer batchStart (the first dense layer).
    Builder(Impl& e, const ExportedModel& m, std::size_t batchStart);
    // The ops of stored layer i, in order; none when i is a ReLU folded into the layer it reads.
    void addLayer(std::size_t i);
    // The image-stage ops, then the batch-stage ones; firstBatchOp is the index of the first of those.
    std::vector<Op> takeOps(std::size_t& firstBatchOp);

    // The engine's uint8 domain of an activation quantization; ConfigError (at `where`) when it does not fit.
    static Domain domainOf(const ActivationQuant& a, const std::string& where);

private:
    // The point a computing layer writes: its own, or that of a ReLU/ReLU6 reading only it.
    struct Point {
        Domain d;
        int act;
        std::string name;
        LayerKind relu;
    };

    // The output clamp of a point, with a ReLU/ReLU6 (or none: LayerKind::Flatten) folded in.
    static std::pair<std::int32_t, std::int32_t> clampOf(const Domain& d, LayerKind act);
    // An op of `kind` for the point `name`, reading activation in0 and writing out.
    static Op opOf(OpKind kind, const std::string& name, int in0, int out);

    // ---- the layer being added (int_engine_build.cpp)
    const ActInfo& input(std::size_t j) const;
    void push(Op op, const ActInfo& info);
    // push with the activation laid out as `like`, on the grid d.
    void pushOnGrid(Op op, const ActInfo& like, const Domain& d);
    Point pointOf();
    bool needsRescale(const Domain& in) const;
    void rescale(int from);
    // Rescales activation a from its grid to d's with `act` folded into the clamp, into act i+1.
    void pushRescale(const ActInfo& a, const Domain& d, LayerKind act, bool traced);
    int extraAct();

    // ---- convolutions and dense layers (int_engine_build_weights.cpp)
    void conv2d(const StoredLayer& l);
    void channelMax(const StoredLayer& l);
    void floatConv(const StoredLayer& l, const ActInfo& in, const StoredTensor& wt, const ConvGeometry& geo);
    void linear(const StoredLayer& l);
    void floatLinear(const StoredLayer& l, const ActInfo& in, const StoredTensor& wt);

    // ---- the layers without weights (int_engine_build_ops.cpp)
    void maxPool(const StoredLayer& l);
    void avgPool(const StoredLayer& l);
    void add();
    void mul();
    void concat(const StoredLayer& l);
    void relu(const StoredLayer& l);
    void pointwise(const StoredLayer& l);
    void prelu(const StoredLayer& l);
    void groupNorm(const StoredLayer& l);
    void gather(const StoredLayer& l);
    void padGather(const StoredLayer& l);
    // Pointwise and PReLU: their own point, on a quantized input.
    Domain ownPoint(const StoredLayer& l, const ActInfo& in) const;

    Impl& m_e;
    const ExportedModel& m_model;
    const std::vector<StoredLayer>& m_layers;
    std::vector<ActInfo>& m_acts;
    const Isa m_isa;
    const std::size_t m_batchStart;
    std::vector<bool> m_fused; // ReLUs folded into the layer they read
    std::vector<Op> m_imageOps, m_batchOps;
    // The layer being added: its index, "Kind 'name'" for errors, and whether it is in the batch stage.
    const StoredLayer* m_layer = nullptr;
    std::size_t m_i = 0;
    std::string m_id;
    bool m_batch = false;
};

} // namespace quantscope
