# frozen_string_literal: true

# The Rails bridge's event reader as a worker runs it: every event it is
# handed goes to stdout as one JSON line. An event with "fail_once" raises
# the first time it is handed over (the reader must REQ it and get it again).
# Usage: ruby events_consumer.rb TOPIC CHANNEL NSQD_TCP_ADDRESS[,MORE]|lookupd:HTTP_ADDRESS
$LOAD_PATH.unshift File.expand_path("../../bridges/rails/lib", __dir__)
require "pushgate"
require "set"

$stdout.sync = true
topic, channel, nsqd = ARGV
failed = Set.new
where = if nsqd.start_with?("lookupd:")
          { lookupd_http_addresses: [nsqd.delete_prefix("lookupd:")], nsqd_tcp_addresses: [] }
        else
          { nsqd_tcp_addresses: nsqd.split(",") }
        end
events = Pushgate::Events.new(topic: topic, channel: channel, **where, requeue_delay: 0, max_backoff: 0.2,
                              max_reconnect_delay: 0.5, lookupd_poll_interval: 0.5)
events.on_any do |event|
  if event["fail_once"] && failed.add?(event["fail_once"])
    puts JSON.generate({ "failed" => event["fail_once"] })
    raise "failing once, on purpose"
  end
  puts JSON.generate(event)
end
puts JSON.generate({ "started" => true })
events.run
puts JSON.generate({ "stopped" => true })
