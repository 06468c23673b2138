// The process grid's arithmetic (rank order: expert group innermost, pipeline outermost), the
// checks that refuse a grid before any communication, how stages split the model, and the layer
// order of a rank's MoE blocks.
#include <gtest/gtest.h>

#include "parallelism/process_grid.h"
#include "runtime/train/parallel_engine.h"
#include "tests/unit/error_text.h"

namespace tandem::parallel {
namespace {

using testing::error_of;

Config grid_config(int64_t pp, int64_t ep, const char* schedule, int64_t microbatches) {
  Config c;
  c.model.n_layers = 4;
  c.model.n_routed_experts = 8;
  c.train.batch_size = 16;
  c.parallel.pp = pp;
  c.parallel.ep = ep;
  c.parallel.schedule = parse_choice<ScheduleKind>(schedule, "schedule");
  c.parallel.microbatches = microbatches;
  return c;
}

TEST(ProcessGrid, RankOrderPutsTheExpertGroupInnermostAndThePipelineOutermost) {
  const GridShape shape{2, 4, 2};  // 8 ranks: 2 stages × (2 expert groups of 2)
  for (int rank = 0; rank < shape.world(); ++rank) {
    const GridCoords c = coords_of(shape, rank);
    EXPECT_EQ(c.stage, rank / 4);
    EXPECT_EQ(c.ep_index, rank % 2);
    EXPECT_EQ(c.edp_index, (rank % 4) / 2);
    EXPECT_EQ(world_rank_of(shape, c.stage, c.dp_index), rank);
  }
  EXPECT_EQ(shape.expert_dp(), 2);
}

TEST(ProcessGrid, DerivesDataParallelismFromTheWorld) {
  const GridShape shape = make_grid_shape(8, grid_config(2, 2, "dualpipe", 4));
  EXPECT_EQ(shape.pp, 2);
  EXPECT_EQ(shape.dp, 4);
  EXPECT_EQ(shape.ep, 2);
}

TEST(ProcessGrid, RefusesImpossibleGridsNamingTheNumbers) {
  EXPECT_NE(error_of([] {
              make_grid_shape(6, grid_config(4, 1, "1f1b", 4));
            }).find("world of 6 ranks is not divisible by parallel.pp = 4"),
            std::string::npos);
  EXPECT_NE(
      error_of([] {
        make_grid_shape(6, grid_config(2, 2, "1f1b", 1));
      }).find("parallel.ep = 2 does not divide the data-parallel size dp = world 6 / pp 2 = 3"),
      std::string::npos);
  EXPECT_NE(error_of([] {
              make_grid_shape(3, grid_config(1, 3, "1f1b", 1));
            }).find("parallel.ep = 3 does not divide model.n_routed_experts = 8"),
            std::string::npos);
  EXPECT_NE(error_of([] { make_grid_shape(3, grid_config(3, 1, "1f1b", 3)); })
                .find("train.batch_size = 16 sequences do not split evenly over dp = 1 "
                      "data-parallel ranks × parallel.microbatches = 3"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              make_grid_shape(4, grid_config(4, 1, "dualpipev", 8));
            }).find("model.n_layers = 4 is fewer than the 8 pipeline stages"),
            std::string::npos);
  const std::string odd = error_of([] { make_grid_shape(3, grid_config(3, 1, "dualpipe", 6)); });
  EXPECT_NE(odd.find("3"), std::string::npos) << odd;
  EXPECT_NE(odd.find("even"), std::string::npos) << odd;
  const std::string few = error_of([] { make_grid_shape(4, grid_config(4, 1, "dualpipe", 4)); });
  EXPECT_NE(few.find("4"), std::string::npos) << few;
  EXPECT_NE(few.find("8"), std::string::npos) << few;
}

TEST(ProcessGrid, StagesSplitTheLayersEvenlyWithTheEmbeddingFirstAndTheHeadLast) {
  ModelConfig m;
  m.n_layers = 5;
  std::vector<int64_t> layers;
  for (int s = 0; s < 3; ++s) {
    const ChunkSpec spec = stage_chunk_spec(m, s, 3, {1, 2});
    EXPECT_EQ(spec.has_embedding, s == 0);
    EXPECT_EQ(spec.has_head, s == 2);
    EXPECT_EQ(spec.experts.index, 1);
    EXPECT_EQ(spec.experts.count, 2);
    if (s > 0) {
      EXPECT_EQ(spec.first_layer, layers.back());
    }
    layers.push_back(spec.last_layer);
    EXPECT_GE(spec.last_layer - spec.first_layer, 1);
  }
  EXPECT_EQ(layers.back(), 5);
}

// Every replica of a stage's MoE layers lays out their expert loads in the order of their layer
// index, whatever order the chunks come in: with 12 layers, by name would put layers.10 and
// layers.11 before layers.2.
TEST(ProcessGrid, MoeBlocksOfTheLocalChunksComeInLayerOrder) {
  ModelConfig m;
  m.vocab_size = 16;
  m.seq_len = 4;
  m.d_model = 8;
  m.n_heads = 2;
  m.d_ff = 8;
  m.n_layers = 12;
  m.n_dense_layers = 1;
  m.n_routed_experts = 4;
  m.top_k = 2;
  m.d_expert = 4;
  // A DualPipe rank of pp 2: chunk 0 runs stage 1 (layers 6..11), chunk 1 stage 0 (0..5).
  std::vector<std::unique_ptr<ModelChunk>> chunks;
  for (int stage : {1, 0})
    chunks.push_back(std::make_unique<ModelChunk>(m, 1, stage_chunk_spec(m, stage, 2, {0, 1})));
  std::vector<int64_t> layers;
  for (MoeFfnBlock* moe : moe_blocks_by_layer(chunks)) layers.push_back(moe->layer());
  EXPECT_EQ(layers, (std::vector<int64_t>{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}));
}

}  // namespace
}  // namespace tandem::parallel
