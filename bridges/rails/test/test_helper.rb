# frozen_string_literal: true

$LOAD_PATH.unshift File.expand_path("../lib", __dir__)
require "minitest/autorun"
require "json"
require "net/http"
require "socket"
require "tmpdir"
require "timeout"
require "pushgate"

ROOT = File.expand_path("../../..", __dir__)
VECTORS = File.join(ROOT, "bridges", "testdata")

def nsq_binary(name)
  local = File.join(ROOT, ".tools", "bin", name)
  return local if File.executable?(local)

  found = ENV["PATH"].split(File::PATH_SEPARATOR).map { |dir| File.join(dir, name) }.find { |p| File.executable?(p) }
  found or raise "#{name} not found: run `make test` (it builds NSQ into .tools/bin)"
end

def free_port
  server = TCPServer.new("127.0.0.1", 0)
  server.addr[1]
ensure
  server&.close
end

# A real nsqd on free ports with its own data directory.
class Nsqd
  attr_reader :tcp_port, :http_port

  def initialize
    @tcp_port = free_port
    @http_port = free_port
    @dir = Dir.mktmpdir("pushgate-ruby-nsqd")
  end

  def http_address = "127.0.0.1:#{@http_port}"

  def start
    log = File.join(@dir, "nsqd.log")
    @pid = Process.spawn(nsq_binary("nsqd"), "--tcp-address=127.0.0.1:#{@tcp_port}",
                         "--http-address=#{http_address}", "--data-path=#{@dir}", out: log, err: log)
    Timeout.timeout(10) do
      loop do
        break if Net::HTTP.get_response(URI("http://#{http_address}/ping")).is_a?(Net::HTTPOK)
      rescue SystemCallError
        sleep 0.05
      end
    end
    self
  end

  def stop
    return unless @pid

    Process.kill("TERM", @pid)
    Process.wait(@pid)
    @pid = nil
  end

  def cleanup
    stop
    FileUtils.remove_entry(@dir)
  end

  # Reads `count` messages of a topic back with nsq_tail, as JSON. nsq_tail
  # waits for ever when fewer have been published, so a test that lost a
  # message fails after `timeout` seconds, saying so, instead of hanging CI.
  def read_back(topic, count, timeout: 15)
    out = +""
    IO.popen([nsq_binary("nsq_tail"), "--nsqd-tcp-address=127.0.0.1:#{@tcp_port}", "--topic=#{topic}",
              "-n=#{count}"], err: File::NULL) do |io|
      deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + timeout
      loop do
        left = deadline - Process.clock_gettime(Process::CLOCK_MONOTONIC)
        if left <= 0 || !IO.select([io], nil, nil, left)
          Process.kill("TERM", io.pid)
          raise "nsq_tail read #{out.lines.count} of #{count} messages of #{topic} in #{timeout} s"
        end
        chunk = io.read_nonblock(65_536, exception: false)
        break if chunk.nil? # nsq_tail exits after `count` messages
        out << chunk unless chunk == :wait_readable
      end
    end
    # nsq_tail reads on an ephemeral channel, which nsqd deletes a moment
    # after nsq_tail has gone. A message published in that moment goes into
    # the dying channel and is lost to the next read_back of the topic; once
    # the topic has no channel, nsqd keeps messages for the next one.
    wait_for_no_channels(topic)
    out.lines.map(&:strip).reject(&:empty?).map { |line| JSON.parse(line) }
  end

  def wait_for_no_channels(topic, timeout: 5)
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + timeout
    loop do
      stats = JSON.parse(Net::HTTP.get(URI("http://#{http_address}/stats?format=json&topic=#{topic}")))
      topic_stats = (stats["topics"] || []).find { |t| t["topic_name"] == topic }
      return if topic_stats.nil? || (topic_stats["channels"] || []).empty?
      raise "nsqd still has nsq_tail's channel of #{topic} after #{timeout} s" if
        Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline
      sleep 0.01
    end
  end

  def message_count(topic)
    stats = JSON.parse(Net::HTTP.get(URI("http://#{http_address}/stats?format=json&topic=#{topic}")))
    topic_stats = (stats["topics"] || []).find { |t| t["topic_name"] == topic } # null when nsqd has none
    topic_stats ? topic_stats["message_count"] : 0
  end
end

NSQD = Nsqd.new.start
Minitest.after_run { NSQD.cleanup }

def publisher_for(topic, nsqd: NSQD, **settings)
  config = Pushgate::Configuration.new({})
  config.nsqd_http_address = nsqd.http_address
  config.topic = topic
  settings.each { |key, value| config.public_send("#{key}=", value) }
  Pushgate::Publisher.new(config)
end

def unique_topic(name)
  "#{name}-#{SecureRandom.hex(4)}"
end
