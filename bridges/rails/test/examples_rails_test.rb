# frozen_string_literal: true

require_relative "test_helper"
require "rbconfig"

# examples/rails, booted as the Rails application it is (support/
# examples_rails_app.rb), does what docs/rails.md says: the cookie signs the
# connection in over the RPC, ChatChannel streams, rejects, transmits,
# speaks to the others through NSQ, and its unsubscribed/disconnect run; the
# layout points at the gateway and Rails serves no /cable.
class ExamplesRailsTest < Minitest::Test
  def test_the_rails_example_switches_to_the_gateway
    topic = unique_topic("examples")
    env = { "PUSHGATE_CABLE_RPC_SECRET" => "examples-rpc-secret", "PUSHGATE_CABLE_URL" => "wss://push.example.com/cable",
            "PUSHGATE_NSQD_HTTP_ADDRESS" => NSQD.http_address, "PUSHGATE_TOPIC" => topic, "RAILS_ENV" => "development" }
    script = File.expand_path("support/examples_rails_app.rb", __dir__)
    output = IO.popen(env, [RbConfig.ruby, script], err: %i[child out], &:read)
    result = JSON.parse(output.lines.last) rescue flunk("the example app printed no result:\n#{output}")

    assert_equal 1, result["connected"]["status"], result["connected"]
    assert_equal ['{"type":"welcome","sid":"sid-alice"}'], result["connected"]["transmissions"]
    assert_equal 2, result["refused"]["status"]
    lobby = result["lobby_stream"]
    assert_match(/\Achat:Z2lk/, lobby) # stream_for a record: its GlobalID
    assert_equal [lobby], result["subscribed"]["streams"]
    history, confirm = result["subscribed"]["transmissions"].map { |t| JSON.parse(t) }
    assert_equal({ "type" => "history", "messages" => [{ "from" => "alice", "text" => "earlier" }] }, history["message"])
    assert_equal "confirm_subscription", confirm["type"]
    assert_equal({ "$p" => lobby, "$w" => lobby }, result["subscribed"]["env"]["istate"].except("room"))
    assert_equal({ "type" => "join", "id" => "1", "info" => '{"name":"alice"}' }, result["subscribed"]["presence"])
    assert_equal 2, result["rejected"]["status"]
    assert_equal "reject_subscription", JSON.parse(result["rejected"]["transmissions"].first)["type"]
    assert_equal({ "status" => 1 }, result["spoke"])
    assert_equal %w[earlier hello], result["messages"]
    broadcasts = NSQD.read_back(topic, 2).map { |b| b.except("id") }.sort_by { |b| b["channel"] }
    assert_equal [{ "channel" => lobby, "data" => { "type" => "message", "message" => { "from" => "alice", "text" => "hello" } },
                    "exclude" => "sid-alice" }, # to_others in the channel action: the calling connection
                  { "channel" => "notes", "data" => { "note" => "hi" }, "exclude" => "sid-page" }], # X-Socket-ID
                 broadcasts
    assert_equal 204, result["noted"]
    assert_equal 1, result["left"]["status"]
    assert result["away"], "unsubscribed ran"
    assert_equal({ "status" => 1 }, result["disconnected"])
    assert result["seen"], "disconnect ran"
    assert_includes result["layout"], '<meta name="action-cable-url" content="wss://push.example.com/cable" />'
    refute result["cable_route"], "Rails still serves /cable"
  end
end
