# frozen_string_literal: true

# Driven by tests/test_bridge_ruby.py: the Rails bridge as an app would use it.
#   ruby tests/ruby/e2e.rb token USER CHANNEL...   -> prints a connection token
#   ruby tests/ruby/e2e.rb publish USER            -> publishes the scripted events
# Configuration comes from PUSHGATE_* variables, as in production.
$LOAD_PATH.unshift File.expand_path("../../bridges/rails/lib", __dir__)
require "pushgate"

case ARGV.shift
when "token"
  user = ARGV.shift
  puts Pushgate.connection_token(user, ttl: 600, channels: ARGV)
when "publish"
  user = ARGV.shift
  Pushgate.publish_to_user(user, { "event" => "personal", "from" => "ruby" })
  Pushgate.broadcast("rails:news", { "event" => "topic" })

  require "active_support/all"
  require "action_cable"
  server = ActionCable::Server::Base.new
  server.config.cable = { "adapter" => "nsq" }
  server.config.logger = Logger.new(nil)
  server.broadcast("chat_room_1", { message: "from ActionCable" })

  require "active_record"
  ActiveRecord::Base.establish_connection(adapter: "sqlite3", database: ":memory:")
  ActiveRecord::Base.connection.create_table(:orders) { |t| t.string :state }
  order = Class.new(ActiveRecord::Base) { self.table_name = "orders" }
  order.transaction do
    order.create!(state: "doomed")
    Pushgate.publish_after_commit { Pushgate.publish_to_user(user, { "event" => "rolled back" }) }
    raise ActiveRecord::Rollback
  end
  order.transaction do
    order.create!(state: "paid")
    Pushgate.publish_after_commit { Pushgate.publish_to_user(user, { "event" => "committed" }) }
  end
  puts "published"
else
  abort "usage: e2e.rb token USER CHANNEL... | publish USER"
end
