import Foundation
import NoiseARGPU
import Testing

/// Outputs and checkpoints leave nothing behind and are never written by two runs at once.
@Suite struct LeftoverTests {
    /// The pid of a process that has exited (so no live process owns files named after it).
    private func deadPID() throws -> Int32 {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/true")
        try p.run()
        p.waitUntilExit()
        return p.processIdentifier
    }

    @Test func aKilledWritersTemporaryIsRemovedByTheNextWrite() throws {
        let dir = try scratchDirectory("leftover-tmp")
        defer { try? FileManager.default.removeItem(at: dir) }
        let out = dir.appendingPathComponent("grid.png")
        let stale = dir.appendingPathComponent(".grid.png.tmp-\(try deadPID())-12345")
        try Data(repeating: 7, count: 4096).write(to: stale)
        let live = dir.appendingPathComponent(".grid.png.tmp-1-999")  // pid 1 is alive: kept
        try Data([1]).write(to: live)
        try OutputFile.write(Data("new".utf8), to: out)
        #expect(!FileManager.default.fileExists(atPath: stale.path))
        #expect(FileManager.default.fileExists(atPath: live.path))
        #expect(try Data(contentsOf: out) == Data("new".utf8))
    }

    @Test func aClaimRefusesASecondClaimAndLeavesNoLockFile() throws {
        let dir = try scratchDirectory("claim")
        defer { try? FileManager.default.removeItem(at: dir) }
        let ckpt = dir.appendingPathComponent("c.safetensors")
        let lockFile = dir.appendingPathComponent(".c.safetensors.lock")
        var first: OutputClaim? = try OutputClaim(ckpt, what: "choose another --checkpoint")
        #expect(FileManager.default.fileExists(atPath: lockFile.path))
        do {
            _ = try OutputClaim(ckpt, what: "choose another --checkpoint")
            Issue.record("a second claim on the same path succeeded")
        } catch let e as NoiseError {
            #expect(e.description.contains("being written by another run (process \(getpid()))"), "\(e)")
        }
        first = nil
        _ = first
        #expect(!FileManager.default.fileExists(atPath: lockFile.path))
        // A killed holder's lock file (unheld) is taken over, and removed by the stale sweep.
        try Data("\(try deadPID())\n".utf8).write(to: lockFile)
        let again = try OutputClaim(ckpt, what: "-")
        again.release()
        try Data("1\n".utf8).write(to: lockFile)
        #expect(OutputFile.removeStaleTemporaries(of: ckpt) == 1)
        #expect(!FileManager.default.fileExists(atPath: lockFile.path))
    }

    /// Two runs on one checkpoint: the second is refused at once (it used to exit 0 and replace
    /// the first's checkpoint), in one line, naming the holder.
    @Test func aSecondTrainingRunOnTheSameCheckpointIsRefused() throws {
        let dir = try scratchDirectory("claim-cli")
        defer { try? FileManager.default.removeItem(at: dir) }
        let ckpt = dir.appendingPathComponent("c.safetensors")
        let held = try OutputClaim(ckpt, what: "-")  // this process plays the first run
        guard let r = try runCLI(["train", "prior", "--forward", "--steps", "2", "--batch", "2", "--d-model", "16",
                                  "--d-ff", "16", "--checkpoint", ckpt.path, "--device", "cpu", "--quiet"]) else { return }
        #expect(r.status != 0 && r.stderr.contains("being written by another run (process \(getpid()))"), "\(r.stderr)")
        #expect(r.stderr.split(separator: "\n").count == 1, "\(r.stderr)")
        #expect(!FileManager.default.fileExists(atPath: ckpt.path))
        held.release()
        // Once free, the run goes ahead and leaves no lock file.
        guard let ok = try runCLI(["train", "prior", "--forward", "--steps", "2", "--batch", "2", "--d-model", "16",
                                   "--d-ff", "16", "--checkpoint", ckpt.path, "--device", "cpu", "--quiet"]) else { return }
        #expect(ok.status == 0, "\(ok.stderr)")
        let names = try FileManager.default.contentsOfDirectory(atPath: dir.path)
        #expect(names == ["c.safetensors"], "\(names)")
    }

    /// The running mean saved with a checkpoint is the same whether the run was resumed or not
    /// (it restarted from an empty window: 0.450 instead of 0.527).
    @Test func theRunningMeanSurvivesAResume() throws {
        let losses: [Float] = (0 ..< 80).map { Float($0 % 7) * 0.25 + Float($0) * 0.01 }
        func run(from start: Int, to steps: Int, recent: [Float]) throws -> (Float, [String: String]) {
            var i = start, last: (Float, [String: String]) = (.nan, [:])
            try TrainingLoop.run(steps: steps, start: start, every: 10, recent: recent, step: {
                i += 1
                return (i, losses[i - 1])
            }) { mean, saved in
                last = (mean, saved)
                return ""
            }
            return last
        }
        let whole = try run(from: 0, to: 80, recent: [])
        let first = try run(from: 0, to: 30, recent: [])
        let resumed = try run(from: 30, to: 80, recent: TrainingLoop.recentLosses(in: first.1))
        #expect(resumed.0 == whole.0 && resumed.1 == whole.1)
        #expect(abs(whole.0 - losses[30...].reduce(0, +) / 50) < 1e-6)

        // Through the CLI: a resumed run's checkpoint says what an uninterrupted one says.
        let dir = try scratchDirectory("resume-mean")
        defer { try? FileManager.default.removeItem(at: dir) }
        let args = ["train", "prior", "--forward", "--batch", "2", "--d-model", "16", "--d-ff", "16",
                    "--checkpoint-every", "2", "--device", "cpu", "--quiet"]
        let a = dir.appendingPathComponent("a.safetensors").path, b = dir.appendingPathComponent("b.safetensors").path
        guard let r1 = try runCLI(args + ["--steps", "6", "--checkpoint", a]),
              let r2 = try runCLI(args + ["--steps", "4", "--checkpoint", b]),
              let r3 = try runCLI(args + ["--steps", "6", "--checkpoint", b, "--resume"]) else { return }
        #expect(r1.status == 0 && r2.status == 0 && r3.status == 0, "\(r1.stderr)\(r2.stderr)\(r3.stderr)")
        let ma = try SafeTensorsFile.readMetadata(URL(fileURLWithPath: a))
        let mb = try SafeTensorsFile.readMetadata(URL(fileURLWithPath: b))
        #expect(ma["train_nll_avg50"] != nil && ma["train_nll_avg50"] == mb["train_nll_avg50"], "\(ma) \(mb)")
        #expect(ma[TrainingLoop.recentLossesKey] == mb[TrainingLoop.recentLossesKey])
    }
}

/// Sharded results are only used as a complete set.
@Suite struct ShardSetTests {
    func run(_ label: String, prompts: [String], shard: [Int]?) throws -> PriorComparison.Run {
        let one = #"{"prompt": "p", "score": 1, "satisfied": 1, "total": 1, "facts": [], "detected": []}"#
        let result = try JSONDecoder().decode(RewardResult.self, from: Data(one.utf8))
        let results = prompts.map { _ in result }
        var r = PriorComparison.Run(label: label, prompts: prompts, seeds: [0], results: results, timing: Evaluation.Timing())
        r.shard = shard
        return r
    }

    @Test func evaluationMergeRefusesIncompleteOrMixedShards() throws {
        let a = [try run("gaussian", prompts: ["a red circle"], shard: [0, 2])]
        let b = [try run("gaussian", prompts: ["a blue square"], shard: [1, 2])]
        let c = [try run("gaussian", prompts: ["a green star"], shard: [2, 3])]
        let unmarked = [try run("gaussian", prompts: ["x"], shard: nil)]
        #expect(try PriorComparison.merge([a, b])[0].prompts.count == 2)
        for (files, expected) in [([a], "incomplete: shard 1/2 of 2 missing"), ([a, c], "split differently"),
                                  ([a, a], "given twice"), ([a, unmarked], "some saved evaluations")] {
            do {
                _ = try PriorComparison.merge(files)
                Issue.record("merged \(files.count) files: expected '\(expected)'")
            } catch let e as NoiseError {
                #expect(e.description.contains(expected), "\(e)")
            }
        }
        // Files of earlier versions (no shard recorded) merge as before.
        let old = [[try run("g", prompts: ["p"], shard: nil)], [try run("g", prompts: ["q"], shard: nil)]]
        #expect(try PriorComparison.merge(old)[0].prompts == ["p", "q"])
    }

    @Test func trainingDataRefusesIncompleteOrMixedShardFolders() throws {
        let dir = try scratchDirectory("shard-set")
        defer { try? FileManager.default.removeItem(at: dir) }
        func touch(_ names: [String]) throws {
            for n in try FileManager.default.contentsOfDirectory(atPath: dir.path) { try FileManager.default.removeItem(at: dir.appendingPathComponent(n)) }
            for n in names { try Data().write(to: dir.appendingPathComponent(n)) }
        }
        func message() -> String {
            do { _ = try NoiseDataset.load(dir); return "loaded" } catch { return "\(error)" }
        }
        try touch(["shard-0-of-2-block-0000.safetensors", "shard-0-of-2.progress.json"])
        #expect(message().contains("incomplete: shard 1/2 of 2 missing"), "\(message())")
        try touch(["shard-0-of-2-block-0000.safetensors", "shard-1-of-2-block-0000.safetensors", "shard-0-of-3-block-0000.safetensors"])
        #expect(message().contains("mixes collections split differently"), "\(message())")
        try touch(["shard-0-of-1-block-0000.safetensors"])
        let progress = #"{"settings": "s", "finishedBlocks": [0], "sampled": 4, "kept": 2, "totalBlocks": 3}"#
        try Data(progress.utf8).write(to: dir.appendingPathComponent("shard-0-of-1.progress.json"))
        #expect(message().contains("shard 0/1 finished 1 of 3 blocks"), "\(message())")
    }
}
