// StatusPage: the page shows the job's state, its numbers and its charts, marks stragglers,
// escapes what it did not write, and keeps a long run's curves bounded.
#include <gtest/gtest.h>

#include <string>

#include "monitoring/status_page.h"

namespace tandem::monitoring {
namespace {

size_t count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

JobStatus running(int64_t step) {
  JobStatus s;
  s.state = JobStatus::State::kRunning;
  s.step = step;
  s.total_steps = 100;
  s.loss = 5.0 - 0.01 * static_cast<double>(step);
  s.tokens_per_second = 12000;
  s.grid.world_size = 2;
  s.grid.dp = 2;
  s.ranks = {{0.09, 0, 0, 0.08, 1.0, false, "node-a"}, {0.17, 0, 0, 0.002, 0.53, true, "node-b"}};
  return s;
}

TEST(StatusPage, ShowsTheStepChartsAndStragglers) {
  StatusPage page({"my<job>", "tiny.toml", "node-a", 1, 5});
  EXPECT_NE(page.render().find("no steps yet"), std::string::npos);
  for (int64_t step = 1; step <= 12; ++step) page.update(running(step));
  page.record_evaluation(10, 4.95);
  page.record_expert_load(1, {10, 20, 30, 40});
  const std::string html = page.render();
  EXPECT_NE(html.find("<b id=\"step\">12</b> of 100"), std::string::npos);
  EXPECT_NE(html.find("my&lt;job&gt;"), std::string::npos);
  EXPECT_EQ(html.find("my<job>"), std::string::npos);
  EXPECT_NE(html.find("http-equiv=\"refresh\" content=\"5\""), std::string::npos);
  EXPECT_EQ(count(html, "<svg"), 4u);  // loss, tokens/s, ranks, experts
  EXPECT_EQ(count(html, "<svg"), count(html, "</svg>"));
  EXPECT_NE(html.find("stragglers: rank 1 on node-b"), std::string::npos);
  EXPECT_NE(html.find("straggler (speed 0.53)"), std::string::npos);
  EXPECT_NE(html.find("held-out loss"), std::string::npos);
  EXPECT_NE(html.find("layer 1 expert 3: 1.60 of the mean"), std::string::npos);
  EXPECT_NE(html.find("restarts 1"), std::string::npos);
  // Self-contained: nothing fetched from elsewhere.
  EXPECT_EQ(html.find("<script"), std::string::npos);
  EXPECT_EQ(html.find("src="), std::string::npos);
  EXPECT_EQ(html.find("http://"), html.find("http://www.w3.org/2000/svg"));
}

TEST(StatusPage, StatesAreNamed) {
  StatusPage page({});
  JobStatus s = running(3);
  s.state = JobStatus::State::kPaused;
  page.update(s);
  EXPECT_NE(page.render().find(">paused<"), std::string::npos);
  s.state = JobStatus::State::kRunning;
  s.checkpoint_in_progress = true;
  page.update(s);
  EXPECT_NE(page.render().find("running, writing a checkpoint"), std::string::npos);
  s.state = JobStatus::State::kFinished;
  page.update(s);
  EXPECT_NE(page.render().find(">finished<"), std::string::npos);
}

TEST(StatusPage, LongRunsKeepBoundedCurves) {
  StatusPage page({});
  for (int64_t step = 1; step <= 20000; ++step) page.update(running(step));
  const std::string html = page.render();
  const size_t start = html.find("<polyline");
  ASSERT_NE(start, std::string::npos);
  const std::string line = html.substr(start, html.find("/>", start) - start);
  EXPECT_LE(count(line, ","), StatusPage::kMaxPoints + 1);
  EXPECT_GE(count(line, ","), StatusPage::kMaxPoints / 2);
  EXPECT_NE(html.find("step 20000"), std::string::npos);  // the newest is kept
}

TEST(StatusPage, RestartingKeepsTheLastPageWithItsStateReplaced) {
  StatusPage page({"job", "tiny.toml", "node-a", 0, 5});
  for (int64_t step = 1; step <= 3; ++step) page.update(running(step));
  const std::string last = page.render();
  const std::string html =
      stale_page(last, "restarting (attempt 1)", "rank 1 on node-b: killed by <SIGKILL>");
  EXPECT_EQ(count(html, "id=\"state\""), 1u);
  EXPECT_NE(html.find(">restarting (attempt 1)</span></h1>"), std::string::npos);
  EXPECT_EQ(html.find(">running</span>"), std::string::npos);
  EXPECT_NE(html.find("killed by &lt;SIGKILL&gt;"), std::string::npos);
  EXPECT_NE(html.find("<b id=\"step\">3</b>"), std::string::npos);  // the rest is kept
  EXPECT_EQ(html.size() > last.size(), true);
  EXPECT_NE(html.find("</html>"), std::string::npos);
  // Nothing from rank 0 yet: a page of its own, still naming the state and the cause.
  const std::string bare = stale_page("", "restarting (attempt 2)", "rank 0 froze");
  EXPECT_NE(bare.find("restarting (attempt 2)"), std::string::npos);
  EXPECT_NE(bare.find("rank 0 froze"), std::string::npos);
  EXPECT_NE(bare.find("http-equiv=\"refresh\""), std::string::npos);
}

}  // namespace
}  // namespace tandem::monitoring
